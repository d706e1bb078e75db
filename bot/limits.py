"""Per-user cooldown and per-guild daily quota, kept in Redis so every bot instance and
every restart sees the same counts. (Concurrent-job caps are the queue's: it refuses
a submit past `max_pending_per_user` / `max_pending_per_guild`.)"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bot.errors import CooldownActive, DailyQuotaReached
from inference.queue import Keys, redis_boundary
from inference.queue.keys import quota_scope
from inference.queue.scripts import Scripts

log = logging.getLogger(__name__)
# Usage counters outlive their day a little so a late refund never recreates a key forever.
_USAGE_TTL_S = 2 * 24 * 3600


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%d")


def seconds_to_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()


class Limits:
    """Cooldown before any work, quota once the number of good images is known."""

    def __init__(self, redis: Redis, scripts: Scripts, keys: Keys, *, cooldown_s: float) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._cooldown_ms = int(cooldown_s * 1000)

    async def start_cooldown(self, user_id: int) -> None:
        """Start the user's cooldown, or raise CooldownActive if it is running."""
        if self._cooldown_ms <= 0:
            return
        key = self._keys.cooldown(user_id)
        with redis_boundary():
            if await self._redis.set(key, b"1", px=self._cooldown_ms, nx=True):
                return
            remaining_ms = await self._redis.pttl(key)
        raise CooldownActive.after(max(remaining_ms, 0) / 1000)

    async def charge(
        self, guild_id: int | None, n: int, *, quota: int, user_id: int | None = None
    ) -> int:
        """Count `n` images against today's quota (the guild's; in DMs the user's own);
        raise DailyQuotaReached if they don't fit."""
        scope = quota_scope(guild_id, user_id)
        total = await self._scripts.charge(scope, utc_day(), n, quota=quota, ttl_s=_USAGE_TTL_S)
        if total < 0:
            raise DailyQuotaReached()
        return total

    async def refund(self, guild_id: int | None, n: int, *, user_id: int | None = None) -> None:
        """Give back images that were charged but never queued."""
        if n <= 0:
            return
        key = self._keys.daily_usage(guild_id, utc_day(), user_id=user_id)
        with redis_boundary():
            await self._redis.decrby(key, n)

    async def used_today(self, guild_id: int | None, *, user_id: int | None = None) -> int:
        key = self._keys.daily_usage(guild_id, utc_day(), user_id=user_id)
        with redis_boundary():
            raw = await self._redis.get(key)
        return int(raw or 0)
