"""The bot's settings: one object, built in `main()` from the environment and `.env`.

Server admins change per-guild behaviour with `/settings` (kept in Redis, see
`bot.guild_config`); these are the operator's defaults and hard limits.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from inference.queue import QueueSettings

DISCORD_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
DISCORD_API_VERSION = 10

HostList = Annotated[tuple[str, ...], NoDecode]


class BotSettings(QueueSettings):
    """Everything `python -m bot` needs: the queue's settings (Redis URL, key prefix, caps,
    job deadline, image limits) plus Discord's. Secrets are SecretStr: they never print."""

    discord_token: SecretStr
    # Names this bot's durable results stream: a restarted bot with the same id receives
    # the answers to jobs its previous run submitted.
    instance_id: str = "bot-1"

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

    # Abuse limits on top of the queue's per-user and per-guild caps (max_pending_per_*).
    # Guild admins may lower the daily quota with /settings, not raise it.
    user_cooldown_s: float = Field(default=3.0, ge=0)
    guild_daily_quota: int = Field(default=500, ge=1)

    # Progress edits: Discord allows ~5 edits per 5 s per token; one every few seconds
    # keeps well clear of that even with several images per request.
    progress_interval_s: float = Field(default=4.0, gt=0)
    # Interaction tokens live 15 minutes; past this age results go to the channel instead.
    interaction_token_ttl_s: float = Field(default=14 * 60.0, gt=0)

    @field_validator("attachment_hosts", "attachment_http_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower() for h in value.split(",") if h.strip())
        return value

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
