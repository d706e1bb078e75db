"""The Cancel button on the "⏳ In line" message, through the real bot and the local
Discord-compatible server: only the requester may press it, a cancelled request is never
answered, and its images go back to the day's quotas."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bot.limits import utc_day
from inference.queue import Keys
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, error_for, is_answer
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)

RUN_S = 1.5  # each batch: long enough for the second request to wait in line


@pytest.mark.slow
async def test_only_the_requester_can_cancel_and_a_cancelled_request_is_refunded_and_silent(
    server: DiscordServer, prefix: str
) -> None:
    image = server.attachment(png_bytes(one_shape_scene(seed=81).image), "w.png")
    ann, ben = server.user("ann"), server.user("ben")
    ws = worker_settings(prefix, batch_size=1, pipeline=False)
    async with (
        running_bot(bot_settings(server, prefix)),
        running_worker(ws, ShapesOracle(sleep_s=RUN_S)),
    ):
        first = await server.slash("describe", user=ann, attachments={"image": image})
        await asyncio.sleep(0.3)  # taken by the worker: the next one waits in line
        second = await server.slash("describe", user=ben, attachments={"image": image})
        [waiting] = await server.recorder.wait_for(
            lambda r: r.params.get("token") == second.token and "Cancel" in str(r.payload)
        )
        assert waiting.content.startswith("⏳ In line")
        assert second.original is not None
        message = server.messages[int(second.original["id"])]

        other = await server.press(message, "Cancel", user=ann)
        refused = await error_for(server, other)
        assert refused.ephemeral and "Only the person who asked can cancel" in refused.content

        pressed = await server.press(message, "Cancel", user=ben)
        callback = await server.wait_for_callback(pressed)
        assert callback.json["type"] == 7  # UPDATE_MESSAGE: the message the button is on
        assert (callback.content, callback.payload["components"]) == ("✖️ Cancelled.", [])
        assert server.messages[int(message["id"])]["content"] == "✖️ Cancelled."

        await answer_for(server, first)
        assert first.original is not None
        answered = server.messages[int(first.original["id"])]
        assert "Cancel" not in str(answered["components"]), "the answer replaced the button"
        await asyncio.sleep(RUN_S + 0.5)  # time enough for a second batch, were there one
    assert not [r for r in server.sent_for(second) if is_answer(r)], "a cancelled answer"
    assert not server.channel_posts()
    keys, day = Keys(prefix), utc_day()
    redis = Redis.from_url(REDIS_URL)
    async with redis:
        assert await redis.get(keys.daily_usage(server.guild.id, day)) == b"1"  # ann's
        assert await redis.get(keys.daily_usage(None, day, user_id=ben.id)) == b"0"
        assert await redis.get(keys.daily_usage(None, day, user_id=ann.id)) == b"1"
        assert await redis.zcard(keys.user_jobs(ben.id)) == 0
