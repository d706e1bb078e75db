"""Cooldown, daily quotas (a server's, a person's own), the per-person cap across servers
and guild settings in the real Redis; the cap also through the real bot."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from bot.errors import CooldownActive, DailyQuotaReached
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.limits import Charge, Limits, seconds_to_midnight, utc_day
from inference.queue import Keys
from inference.queue.connection import awaited
from inference.queue.scripts import Scripts
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import error_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    delete_prefix,
    one_shape_scene,
    png_bytes,
    running_bot,
    unique_prefix,
)
from tests.support.queue import aw


async def used_today(
    redis: Redis, keys: Keys, guild_id: int | None, *, user_id: int | None = None
) -> int:
    """Today's count of a guild (or, without one, of the person `user_id`), read directly."""
    return int(await aw(redis.get(keys.daily_usage(guild_id, utc_day(), user_id=user_id))) or 0)


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
    first = await limits.charge(7, 3, quota=4)
    assert first.total == 3
    with pytest.raises(DailyQuotaReached, match=r"This server .* quota of 4 images"):
        await limits.charge(7, 2, quota=4)
    assert await used_today(redis, keys, 7) == 3, "a refused charge takes nothing"
    await limits.refund(first, 2)
    assert (await limits.charge(7, 3, quota=4)).total == 4
    assert (await limits.charge(8, 4, quota=4)).total == 4  # per guild
    assert 0 < seconds_to_midnight() <= 86_400


async def test_a_persons_own_quota_counts_across_servers_and_dms(
    redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    limits = Limits(redis, Scripts(redis, keys), keys, cooldown_s=0)
    await limits.charge(1, 2, quota=100, user_id=9, user_quota=5)
    await limits.charge(2, 2, quota=100, user_id=9, user_quota=5)
    # A third server (or a throwaway one) has room; the person has not.
    with pytest.raises(DailyQuotaReached, match=r"your own quota of 5 .* resets at midnight UTC"):
        await limits.charge(3, 2, quota=100, user_id=9, user_quota=5)
    assert await used_today(redis, keys, 3) == 0, "all or nothing: the server was not charged"
    dm = await limits.charge(None, 1, quota=100, user_id=9, user_quota=5)  # DMs: the only one
    assert dm.total == 5 and await used_today(redis, keys, None, user_id=9) == 5
    with pytest.raises(DailyQuotaReached, match="your own quota"):
        await limits.charge(None, 1, quota=100, user_id=9, user_quota=5)
    assert (await limits.charge(1, 5, quota=100, user_id=10, user_quota=5)).total == 7


async def test_a_refund_lands_on_the_day_it_was_charged(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    limits = Limits(redis, Scripts(redis, keys), keys, cooldown_s=0)
    yesterday = Charge(day="2026-01-01", scopes=("7", "user-3"), total=0)
    await aw(redis.set(keys.daily_usage(7, "2026-01-01"), 4, ex=60))
    today = await limits.charge(7, 2, quota=9, user_id=3, user_quota=9)
    await limits.refund(yesterday, 3)  # charged before midnight, refunded after
    assert await aw(redis.get(keys.daily_usage(7, "2026-01-01"))) == b"1"
    assert 0 < await redis.ttl(keys.daily_usage(7, "2026-01-01")) <= 60
    assert not await redis.exists(keys.daily_usage(None, "2026-01-01", user_id=3))
    assert (
        await used_today(redis, keys, 7) == 2
        and await used_today(redis, keys, None, user_id=3) == 2
    )
    await limits.refund(today, 5)  # never below zero
    assert await used_today(redis, keys, 7) == 0


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


async def test_one_person_in_three_servers_is_refused_beyond_their_cap_in_total() -> None:
    # Through the real bot and the local Discord-compatible server: a worker is online
    # (its heartbeat) but takes nothing, so every queued job stays pending.
    server = DiscordServer(guild_count=3)
    await server.start()
    prefix = unique_prefix()
    redis = Redis.from_url(REDIS_URL)
    keys = Keys(prefix)
    try:
        await redis.zadd(keys.workers, {"idle": time.time() + 600})
        settings = bot_settings(server, prefix, max_pending_per_user=2, user_cooldown_s=0)
        async with running_bot(settings):
            image = server.attachment(png_bytes(one_shape_scene(seed=5).image), "s.png")
            ann, bob = server.user("ann"), server.user("bob")
            for guild in server.guilds[:2]:
                await server.slash("describe", user=ann, guild=guild, attachments={"image": image})
            await _until_pending(redis, keys, ann.id, 2)
            third = await server.slash(
                "describe", user=ann, guild=server.guilds[2], attachments={"image": image}
            )
            refusal = (await error_for(server, third)).text
            assert "2 requests waiting" in refusal and "every server and DM" in refusal
            assert "as soon as one is answered" in refusal
            dm = await server.slash("describe", user=ann, attachments={"image": image}, dm=True)
            assert "2 requests waiting" in (await error_for(server, dm)).text
            # Someone else in the same server is not affected.
            other = await server.slash(
                "describe", user=bob, guild=server.guilds[2], attachments={"image": image}
            )
            assert other.token and await _until_pending(redis, keys, bob.id, 1)
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


async def test_two_peoples_dms_do_not_share_a_line() -> None:
    # Each person's DMs are a line (and a cap, MAX_PENDING_PER_GUILD) of their own: a
    # stranger's full DMs refuse nobody else, where a shared "dm" line refused everybody.
    server = DiscordServer()
    await server.start()
    prefix = unique_prefix()
    redis = Redis.from_url(REDIS_URL)
    keys = Keys(prefix)
    try:
        await redis.zadd(keys.workers, {"idle": time.time() + 600})
        settings = bot_settings(server, prefix, max_pending_per_guild=1, user_cooldown_s=0)
        async with running_bot(settings):
            image = server.attachment(png_bytes(one_shape_scene(seed=6).image), "s.png")
            ann, bob = server.user("ann"), server.user("bob")
            await server.slash("describe", user=ann, attachments={"image": image}, dm=True)
            await _until_pending(redis, keys, ann.id, 1)
            again = await server.slash("describe", user=ann, attachments={"image": image}, dm=True)
            assert "You already have 1 request waiting" in (await error_for(server, again)).text
            await server.slash("describe", user=bob, attachments={"image": image}, dm=True)
            await _until_pending(redis, keys, bob.id, 1)
            ring = await aw(redis.lrange(keys.guild_ring, 0, -1))
            assert ring == [f"dm-{ann.id}".encode(), f"dm-{bob.id}".encode()]
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


async def test_pictures_over_the_queues_byte_budget_are_refused_as_busy_and_counted() -> None:
    server = DiscordServer()
    await server.start()
    prefix = unique_prefix()
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.zadd(Keys(prefix).workers, {"idle": time.time() + 600})
        settings = bot_settings(server, prefix, max_queued_bytes=100, user_cooldown_s=0)
        async with running_bot(settings) as bot:
            image = server.attachment(png_bytes(one_shape_scene(seed=7).image), "s.png")
            state = await server.slash(
                "describe", user=server.user("cy"), attachments={"image": image}
            )
            assert (
                "busy right now. Please try again in a moment"
                in (await error_for(server, state)).text
            )
            busy = {"kind": "slash", "outcome": "busy"}
            assert bot.metrics.registry.get_sample_value("palicord_bot_requests_total", busy) == 1
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


async def _until_pending(redis: Redis, keys: Keys, user_id: int, n: int) -> bool:
    """Wait until the queue counts `n` outstanding jobs for the person (the bot queues them)."""
    async with asyncio.timeout(10):
        while int(await aw(redis.hget(keys.user_pending, str(user_id))) or 0) != n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return True
