"""The bot's settings: one object, built in `main()` from the environment and `.env`.

Server admins change per-guild behaviour with `/settings` (kept in Redis, see
`bot.guild_config`); these are the operator's defaults and hard limits.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from inference.queue import QueueSettings

DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
# Where pasted links are fetched from directly by default: Discord's own CDN and the image
# hosts most pictures pasted in chats come from (their direct-image hostnames, which serve
# the file itself, not a web page). Any other site is read through Discord's preview.
COMMON_IMAGE_HOSTS = (
    "i.imgur.com",
    "i.redd.it",
    "media.tenor.com",
    "media.giphy.com",
    "pbs.twimg.com",
)
DEFAULT_DISCORD_CDN_URL = "https://cdn.discordapp.com"
DISCORD_API_VERSION = 10
DEFAULT_INSTANCE_ID = "bot-1"

HostList = Annotated[tuple[str, ...], NoDecode]
ShardIds = Annotated[tuple[int, ...], NoDecode]


class BotSettings(QueueSettings):
    """Everything `python -m bot` needs: the queue's settings (Redis URL, key prefix, caps,
    job deadline, image limits) plus Discord's. Secrets are SecretStr: they never print."""

    discord_token: SecretStr
    # Names this bot's durable results stream: a restarted bot with the same id receives
    # the answers to jobs its previous run submitted. Unset with SHARD_IDS, each shard
    # process gets its own from its shard range ("bot-shards-0.1-of-4"), stable across
    # restarts; two processes running at once must never share one.
    instance_id: str = DEFAULT_INSTANCE_ID

    # Sharding (discord.py's AutoShardedBot). Unset: one process runs as many shards as
    # Discord recommends. SHARD_COUNT with SHARD_IDS (e.g. "0,1" or "0-3"): this process
    # runs that range of SHARD_COUNT shards, so a big bot spreads over several processes.
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: ShardIds | None = None

    # Where discord.py talks to: discord.com unless a REST proxy or test server is set.
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    # Sync commands to this guild only (instant, for development) instead of globally.
    dev_guild_id: int | None = None

    # Attachments are fetched only from these hosts, over https; plain http only for the
    # hosts in attachment_http_hosts (a loopback CDN in tests, never a public host).
    attachment_hosts: HostList = DISCORD_CDN_HOSTS
    attachment_http_hosts: HostList = ()
    max_images_per_message: int = Field(default=4, ge=1, le=10)
    download_timeout_s: float = Field(default=20.0, gt=0)
    # Pasted links are fetched directly only from these hosts (https, public addresses
    # only); a link elsewhere is read from Discord's preview of it, on its media proxy.
    image_link_hosts: HostList = DISCORD_CDN_HOSTS + COMMON_IMAGE_HOSTS
    # How long a mention waits for Discord to add a link's preview (a message update).
    link_preview_wait_s: float = Field(default=5.0, ge=0, le=30)
    # Stickers ({url}/stickers/{id}.png) and custom emoji ({url}/emojis/{id}.png) come
    # from here; its host must be an attachment host.
    discord_cdn_url: str = DEFAULT_DISCORD_CDN_URL

    # Abuse limits on top of the queue's per-user and per-guild caps (max_pending_per_*).
    # Guild admins may lower the daily quota with /settings, not raise it. A person's own
    # quota counts their images across every guild and DM (in DMs it is the only one).
    user_cooldown_s: float = Field(default=3.0, ge=0)
    guild_daily_quota: int = Field(default=500, ge=1)
    user_daily_quota: int = Field(default=200, ge=1)

    # Automatic alt text (/settings alt_text_channels). Messages that do not mention the
    # bot carry their pictures only with Discord's privileged Message Content intent: it
    # must be switched on in the Developer Portal (Bot → Message Content Intent) and here.
    message_content_intent: bool = False
    # Most pictures described automatically per channel per hour (a flood in one channel
    # costs the server's quota and the workers' idle time, never more than this).
    alt_text_per_channel_per_hour: int = Field(default=60, ge=1)

    # Progress edits: Discord allows ~5 edits per 5 s per token; one every few seconds
    # keeps well clear of that even with several images per request.
    progress_interval_s: float = Field(default=4.0, gt=0)
    # Interaction tokens live 15 minutes; past this age results go to the channel instead.
    interaction_token_ttl_s: float = Field(default=14 * 60.0, gt=0)

    def secrets(self) -> tuple[str, ...]:
        """The bot token and the Redis password, for the log filter."""
        return (self.discord_token.get_secret_value(), *super().secrets())

    @field_validator("attachment_hosts", "attachment_http_hosts", "image_link_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @model_validator(mode="after")
    def _cdn_is_an_attachment_host(self) -> BotSettings:
        self.discord_cdn_url = self.discord_cdn_url.strip().rstrip("/")
        parts = urlsplit(self.discord_cdn_url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        host = (parts.hostname or "").lower()
        https_ok = port in (None, 443) and host in self.attachment_hosts
        ok = (parts.scheme == "https" and https_ok) or (
            parts.scheme == "http" and host in self.attachment_http_hosts
        )
        if not ok:
            raise ValueError(
                "DISCORD_CDN_URL must be an https URL on one of ATTACHMENT_HOSTS "
                "(or http on one of ATTACHMENT_HTTP_HOSTS)"
            )
        return self

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _parse_shard_ids(cls, value: object) -> object:
        if isinstance(value, int):
            return (value,)
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            if not (first.isdigit() and (not dash or last.isdigit())):
                raise ValueError("must be shard ids or ranges, such as 0,1 or 0-3")
            ids.extend(range(int(first), int(last if dash else first) + 1))
        return tuple(ids)

    @model_validator(mode="after")
    def _shard_range(self) -> BotSettings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the bot's total number of shards)")
        ids = self.shard_ids
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i < self.shard_count for i in ids):
            raise ValueError("SHARD_IDS must be distinct ids below SHARD_COUNT")
        if "instance_id" not in self.model_fields_set:
            # Stable per range, so a restarted shard process reads its own results again.
            self.instance_id = f"bot-shards-{'.'.join(map(str, ids))}-of-{self.shard_count}"
        return self

    @field_validator("discord_api_base")
    @classmethod
    def _versioned_api_base(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        base = value.strip().rstrip("/")
        # discord.py's Route.BASE includes the version; accept a bare proxy root as well.
        if not re.search(r"/api/v\d+$", base):
            base = f"{base}/api/v{DISCORD_API_VERSION}"
        return base
