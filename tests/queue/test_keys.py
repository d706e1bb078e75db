"""Key names: one prefix, one module, and the Lua key builders agree with Python's."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from inference.queue.keys import DEFAULT_PREFIX, Keys, check_part, lua_prelude


def test_default_prefix_has_a_cluster_hash_tag() -> None:
    keys = Keys()
    assert DEFAULT_PREFIX.startswith("{") and "}" in DEFAULT_PREFIX
    every = [keys.guild_ring, keys.leases, keys.job("j"), keys.results("bot"), keys.wakeup]
    assert all(k.startswith("{palicord}:") for k in every)


def test_dynamic_parts_land_in_the_key() -> None:
    keys = Keys("p:")
    assert keys.user_queue("g1", "u2") == "p:g:g1:u:u2"
    assert keys.guild_users("g1") == "p:g:g1:users"
    assert keys.daily_usage(7, "2026-12-02") == "p:bot:usage:7:2026-12-02"
    assert keys.daily_usage(None, "2026-12-02") == "p:bot:usage:dm:2026-12-02"
    assert keys.user_jobs(5) == "p:bot:user-jobs:5"


def test_the_bots_keys_share_the_queues_prefix() -> None:
    keys = Keys()
    bot_keys = [
        keys.cooldown(1),
        keys.daily_usage(2, "2026-12-02"),
        keys.guild_config(3),
        keys.request("r4"),
        keys.user_jobs(5),
    ]
    assert all(k.startswith(DEFAULT_PREFIX + "bot:") for k in bot_keys)


def test_dynamic_parts_are_checked() -> None:
    with pytest.raises(ValueError):
        Keys().job("a:b")


@pytest.mark.parametrize("bad", ["", "a:b", "a b", "{x}", "x" * 101, "é"])
def test_check_part_rejects_unsafe_parts(bad: str) -> None:
    with pytest.raises(ValueError):
        check_part(bad)


async def test_lua_builders_match_python(redis: Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    script = lua_prelude() + (
        "return {K.guild_ring(), K.user_queue('g1', 'u2'), K.job('j3'), K.results('b4'),"
        " K.worker('w5'), K.daily_usage('6', '2026-12-02')}"
    )
    got = await redis.eval(script, 0, redis_prefix)  # type: ignore[misc]
    assert [g.decode() for g in got] == [
        keys.guild_ring,
        keys.user_queue("g1", "u2"),
        keys.job("j3"),
        keys.results("b4"),
        keys.worker("w5"),
        keys.daily_usage(6, "2026-12-02"),
    ]
