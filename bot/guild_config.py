"""Per-guild settings that server admins change with /settings, kept in a Redis hash."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from redis.asyncio import Redis

from inference.errors import UnsupportedLanguage
from inference.queue import Keys, redis_boundary
from inference.queue.connection import awaited
from inference.tasks import normalize_language

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuildConfig:
    """A guild's choices; the defaults mean "as the operator configured"."""

    channels: frozenset[int] = field(default_factory=frozenset)  # empty: every channel
    daily_quota: int | None = None  # None: the operator's default
    language: str | None = None  # None: each user's Discord locale, else English
    mention_replies: bool = True
    # Channels where pictures posted without alt text are described (bot.alt_text); empty:
    # nowhere. Independent of `channels`, which limits where people can ask the bot.
    alt_text_channels: frozenset[int] = field(default_factory=frozenset)

    def allows_channel(self, channel_id: int | None, parent_id: int | None = None) -> bool:
        """Whether the bot answers in this channel (a thread counts as its parent)."""
        if not self.channels:
            return True
        return channel_id in self.channels or (parent_id is not None and parent_id in self.channels)

    def describes_channel(self, channel_id: int) -> bool:
        """Whether pictures posted in this channel get automatic alt text (not threads:
        a re-post through a webhook would need the thread's id as well)."""
        return channel_id in self.alt_text_channels

    def quota(self, operator_quota: int) -> int:
        """The effective daily quota: admins may lower the operator's, never raise it."""
        return operator_quota if self.daily_quota is None else min(self.daily_quota, operator_quota)


def _decode(raw: dict[bytes, bytes]) -> GuildConfig:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    config = GuildConfig()
    # Each field is parsed on its own: one bad value (hand-edited Redis, an old version)
    # must not throw away the others.
    try:
        if fields.get("channels"):
            ids = frozenset(int(c) for c in fields["channels"].split(",") if c)
            config = replace(config, channels=ids)
        if fields.get("alt_text_channels"):
            ids = frozenset(int(c) for c in fields["alt_text_channels"].split(",") if c)
            config = replace(config, alt_text_channels=ids)
        if fields.get("daily_quota"):
            config = replace(config, daily_quota=max(1, int(fields["daily_quota"])))
    except ValueError:
        log.warning("ignoring a malformed guild setting")
    if fields.get("language"):
        try:
            config = replace(config, language=normalize_language(fields["language"]))
        except UnsupportedLanguage:
            log.warning("ignoring an unsupported guild language")
    if "mention_replies" in fields:
        config = replace(config, mention_replies=fields["mention_replies"] == "1")
    return config


def _encode(config: GuildConfig) -> dict[str, str]:
    return {
        "channels": ",".join(str(c) for c in sorted(config.channels)),
        "daily_quota": "" if config.daily_quota is None else str(config.daily_quota),
        "language": config.language or "",
        "mention_replies": "1" if config.mention_replies else "0",
        "alt_text_channels": ",".join(str(c) for c in sorted(config.alt_text_channels)),
    }


class GuildConfigStore:
    """Reads and writes GuildConfig; direct messages always get the defaults."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def get(self, guild_id: int | None) -> GuildConfig:
        if guild_id is None:
            return GuildConfig()
        with redis_boundary():
            raw = await awaited(self._redis.hgetall(self._keys.guild_config(guild_id)))
        return _decode(raw)

    async def put(self, guild_id: int, config: GuildConfig) -> None:
        with redis_boundary():
            key = self._keys.guild_config(guild_id)
            await awaited(self._redis.hset(key, mapping=_encode(config)))
