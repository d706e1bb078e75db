"""Cooldown, daily quota and guild settings in the real Redis (conftest's fixtures)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.errors import CooldownActive, DailyQuotaReached
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.limits import Limits, seconds_to_midnight
from inference.queue import Keys
from inference.queue.connection import awaited
from inference.queue.scripts import Scripts


async def test_cooldown(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    limits = Limits(redis, Scripts(redis, keys), keys, cooldown_s=30)
    await limits.start_cooldown(1)
    with pytest.raises(CooldownActive, match=r"wait (29|30) s"):
        await limits.start_cooldown(1)
    await limits.start_cooldown(2)  # per user


async def test_daily_quota_is_atomic_and_refundable(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    limits = Limits(redis, Scripts(redis, keys), keys, cooldown_s=0)
    assert await limits.charge(7, 3, quota=4) == 3
    with pytest.raises(DailyQuotaReached):
        await limits.charge(7, 2, quota=4)
    assert await limits.used_today(7) == 3, "a refused charge takes nothing"
    await limits.refund(7, 2)
    assert await limits.charge(7, 3, quota=4) == 4
    assert await limits.charge(8, 4, quota=4) == 4  # per guild
    assert 0 < seconds_to_midnight() <= 86_400


async def test_guild_config_round_trip_and_bad_values(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    store = GuildConfigStore(redis, keys)
    assert await store.get(1) == GuildConfig()
    config = GuildConfig(channels=frozenset({5, 6}), daily_quota=9, language="de")
    await store.put(1, config)
    assert await store.get(1) == config
    assert config.quota(100) == 9 and config.quota(5) == 5
    assert config.allows_channel(5) and not config.allows_channel(7)
    assert config.allows_channel(99, parent_id=6)
    bad = {"daily_quota": "lots", "language": "xx"}
    await awaited(redis.hset(keys.guild_config(2), mapping=bad))
    assert await store.get(2) == GuildConfig()
    assert await store.get(None) == GuildConfig()
