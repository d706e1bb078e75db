"""Per-user cooldown and daily quotas (each guild's, and each person's own across every
guild and DM), kept in Redis so every bot instance and every restart sees the same
counts. (Concurrent-job caps are the queue's: it refuses a submit past
`max_pending_per_user`, counted per person everywhere, or `max_pending_per_guild`.)"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


def quota_scopes(guild_id: int | None, user_id: int | None) -> tuple[str, ...]:
    """The daily quotas a request counts against: its guild's and, given `user_id`, the
    person's own (in DMs only the person's)."""
    scopes = [quota_scope(guild_id)] if guild_id is not None else []
    if user_id is not None:
        scopes.append(quota_scope(None, user_id))
    return tuple(scopes) or (quota_scope(None),)


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
        self,
        guild_id: int | None,
        n: int,
        *,
        quota: int,
        user_id: int | None = None,
        user_quota: int | None = None,
    ) -> Charge:
        """Count `n` images against today's quotas, all or none: the guild's `quota` and,
        given `user_id`, the person's own `user_quota` (in DMs only the person's, which
        defaults to `quota`); raise DailyQuotaReached naming the one that is full."""
        day = utc_day()
        person = quota_scope(None, user_id) if user_id is not None else None
        quotas = [
            (scope, user_quota if scope == person and user_quota is not None else quota)
            for scope in quota_scopes(guild_id, user_id)
        ]
        total = await self._scripts.charge(day, n, quotas, ttl_s=_USAGE_TTL_S)
        if total < 0:
            scope, full = quotas[-total - 1]
            resets_in_s = seconds_to_midnight()
            if scope == person:
                raise DailyQuotaReached.for_person(full, resets_in_s)
            raise DailyQuotaReached.for_server(full, resets_in_s)
        return Charge(day=day, scopes=tuple(scope for scope, _ in quotas), total=total)

    async def refund(self, charge: Charge, n: int) -> None:
        """Give back images that were charged but never queued, on the day they were
        charged (a refund after midnight must not lower the new day's count)."""
        if n <= 0:
            return
        await self._scripts.charge(
            charge.day, -n, [(scope, 0) for scope in charge.scopes], ttl_s=_USAGE_TTL_S
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """What one `Limits.charge` counted: the day, the quota scopes, the first one's total."""

    day: str
    scopes: tuple[str, ...]
    total: int
