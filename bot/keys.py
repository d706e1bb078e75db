"""Every Redis key the bot itself uses, under the queue's prefix, built here only.

The queue's keys live in `inference.keys`; the bot's sit beside them under `bot:` so one
prefix (and one Redis Cluster hash tag) still covers the whole deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.keys import DEFAULT_PREFIX, check_part


@dataclass(frozen=True, slots=True)
class BotKeys:
    """Key builder for the bot's own state."""

    prefix: str = DEFAULT_PREFIX

    def _k(self, *parts: str) -> str:
        return self.prefix + "bot:" + ":".join(check_part(p) for p in parts)

    def cooldown(self, user_id: int) -> str:
        """String with a TTL: present while the user must wait."""
        return self._k("cooldown", str(user_id))

    def daily_usage(self, guild_id: int | None, day: str) -> str:
        """Counter of images queued for a guild on a UTC day (YYYY-MM-DD)."""
        return self._k("usage", str(guild_id or "dm"), day)

    def guild_config(self, guild_id: int) -> str:
        """Hash of a guild's /settings."""
        return self._k("guild", str(guild_id))

    def request(self, request_id: str) -> str:
        """Hash of one request's per-image outcomes, until its answer is delivered."""
        return self._k("request", request_id)

    def user_jobs(self, user_id: int) -> str:
        """Sorted set job id → deadline, for /queue."""
        return self._k("user-jobs", str(user_id))
