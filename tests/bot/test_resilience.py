"""The bot under stress: restarts mid-job, no worker, Redis away, a busy line."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from aiohttp import web
from redis.asyncio import Redis

from bot.client import PalicordBot
from bot.delivery import RETRY_MAX_S
from inference.queue import Keys
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer, InteractionState
from sandbox.discord.webhooks import ACK_DEADLINE_S
from tests.support.discord_server.expect import answer_for, error_for
from tests.support.discord_server.harness import (
    REDIS_PORT,
    REDIS_URL,
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)
from tests.support.discord_server.tcp_proxy import TcpProxy


@pytest.mark.slow
async def test_restarted_bot_delivers_answers_to_jobs_queued_before(
    server: DiscordServer, prefix: str
) -> None:
    settings = bot_settings(server, prefix)
    scene = one_shape_scene(seed=31)
    image = server.attachment(png_bytes(scene.image), "r.png")
    async with running_worker(worker_settings(prefix), ShapesOracle(sleep_s=1.0)):
        async with running_bot(settings):
            state = await server.slash(
                "describe", user=server.user("ann"), attachments={"image": image}
            )
            await server.recorder.wait_for(
                lambda r: (
                    r.params.get("token") == state.token
                    and ("In line" in r.content or "Working" in r.content)
                )
            )
        # The bot is gone while the worker finishes; a new run with the same instance id
        # reads the result from the durable stream and answers the old interaction.
        async with running_bot(settings):
            answer = await answer_for(server, state)
    assert f"{scene.shapes[0].color} {scene.shapes[0].kind}" in answer.text


async def test_no_worker_online_is_reported(server: DiscordServer, bot: PalicordBot) -> None:
    image = server.attachment(png_bytes(one_shape_scene(seed=32).image), "n.png")
    state = await server.slash("describe", user=server.user("bea"), attachments={"image": image})
    error = await error_for(server, state)
    assert "No vision worker is online" in error.content


async def test_redis_unavailable_is_reported_and_gateway_stays_up(
    server: DiscordServer, prefix: str
) -> None:
    settings = bot_settings(server, prefix, redis_url="redis://127.0.0.1:1/0")
    async with running_bot(settings) as bot:
        image = server.attachment(png_bytes(one_shape_scene(seed=33).image), "x.png")
        state = await server.slash("describe", user=server.user("cy"), attachments={"image": image})
        error = await error_for(server, state)
        assert "can't reach my job queue" in error.content
        since = server.recorder.next_seq()
        msg = await server.post_message(server.user("di"), attachments=[image], mention_bot=True)
        [reply] = await server.recorder.wait_for(
            lambda r: r.key == "POST /channels/{channel_id}/messages", since=since
        )
        assert "can't reach my job queue" in reply.content
        assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
        assert bot.is_ready() and not bot.is_closed()
        assert server.gateway.connects == 1


async def test_bot_recovers_when_redis_returns(
    server: DiscordServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.delivery")
    scene = one_shape_scene(seed=35)
    image = server.attachment(png_bytes(scene.image), "z.png")
    caption = f"{scene.shapes[0].color} {scene.shapes[0].kind}"

    async def describe(name: str) -> InteractionState:
        return await server.slash("describe", user=server.user(name), attachments={"image": image})

    # The bot reaches Redis through a proxy the test cuts; the worker talks to Redis directly.
    async with TcpProxy("127.0.0.1", REDIS_PORT) as proxy:
        settings = bot_settings(server, prefix, redis_url=f"redis://127.0.0.1:{proxy.port}/0")
        async with running_worker(worker_settings(prefix), ShapesOracle()), running_bot(settings):
            assert caption in (await answer_for(server, await describe("ed"))).text

            await proxy.stop()  # Redis "goes away": open connections cut, new ones refused
            error = await error_for(server, await describe("flo"))
            assert "can't reach my job queue" in error.content

            await proxy.start()
            # The next request is queued and its result comes back through the results
            # loop, which must have reconnected on its own (it backs off to RETRY_MAX_S).
            answer = await answer_for(server, await describe("gil"), timeout_s=RETRY_MAX_S + 10)
            assert caption in answer.text
            assert server.gateway.connects == 1, "the gateway connection stayed up throughout"
    assert "results stream unavailable" in caplog.text, "the results loop saw the outage"


@pytest.mark.slow
async def test_a_hung_redis_is_reported_within_discords_deadline(
    server: DiscordServer, prefix: str
) -> None:
    image = server.attachment(png_bytes(one_shape_scene(seed=36).image), "h.png")
    # Redis accepts the bot's connections but stops answering: a stalled proxy in front.
    async with TcpProxy("127.0.0.1", REDIS_PORT) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        # The default Redis timeout (15 s) is far past Discord's 3 s: the bot must not wait
        # for it before answering.
        async with running_bot(bot_settings(server, prefix, redis_url=url)):
            proxy.stall()
            state = await server.slash(
                "describe", user=server.user("hal"), attachments={"image": image}
            )
            error = await error_for(server, state)
            assert "can't reach my job queue" in error.content
            # Told by the interaction's own (private) callback, before Discord gave up on it.
            assert state.callback is not None and state.callback_at is not None
            assert state.callback_at - state.dispatched_at < ACK_DEADLINE_S

            since = server.recorder.next_seq()
            await server.post_message(server.user("ida"), attachments=[image], mention_bot=True)
            [reply] = await server.recorder.wait_for(
                lambda r: r.key == "POST /channels/{channel_id}/messages", since=since
            )
            assert "can't reach my job queue" in reply.content

            # Redis answers again: the next request gets past the checks to the queue
            # (which, with no worker running, says so).
            proxy.resume()
            again = await server.slash(
                "describe", user=server.user("jo"), attachments={"image": image}
            )
            assert "No vision worker is online" in (await error_for(server, again)).content


@pytest.mark.slow
async def test_progress_edits_are_throttled_and_only_on_change(
    server: DiscordServer, prefix: str
) -> None:
    settings = bot_settings(server, prefix, progress_interval_s=0.4)
    scene = one_shape_scene(seed=34)
    image = server.attachment(png_bytes(scene.image), "p.png")
    ws = worker_settings(prefix, batch_size=1)
    async with running_bot(settings), running_worker(ws, ShapesOracle(sleep_s=0.3)):
        states = [
            await server.slash("describe", user=server.user(f"q{i}"), attachments={"image": image})
            for i in range(5)
        ]
        await asyncio.gather(*(answer_for(server, s, timeout_s=20) for s in states))
    for state in states:
        sent = server.sent_for(state)
        progress = [r for r in sent if r.method == "PATCH" and not r.embed_text]
        texts = [r.content for r in progress]
        assert all(a != b for a, b in itertools.pairwise(texts)), texts
        gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
        assert all(g >= 0.35 for g in gaps), gaps
        assert len([r for r in sent if r.embed_text]) == 1
    last = server.sent_for(states[-1])
    assert any("In line: #" in r.content for r in last), "a queued request shows its place"


async def test_a_request_the_bot_died_with_is_answered_by_its_next_run(
    server: DiscordServer, prefix: str
) -> None:
    # The picture's host never answers: the bot has acknowledged the request ("thinking…")
    # and not queued it yet when it goes away.
    async def never(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/{name}", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    data = png_bytes(one_shape_scene(seed=37).image)
    image = server.attachment(data, "h.png", url=f"http://127.0.0.1:{port}/h.png")
    settings = bot_settings(server, prefix, download_timeout_s=60)
    opening = Keys(prefix).opening(settings.instance_id)
    redis = Redis.from_url(REDIS_URL)
    try:
        async with running_bot(settings):
            state = await server.slash(
                "describe", user=server.user("hal"), attachments={"image": image}
            )
            async with asyncio.timeout(10):
                while not await redis.zcard(opening):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            left_behind = dict(await redis.zrange(opening, 0, -1, withscores=True))
        # A SIGKILL leaves the listing exactly as it was; this orderly shutdown need not.
        await redis.zadd(opening, left_behind)
        async with running_bot(settings):
            answer = await answer_for(server, state)
        assert "restarted while taking this request" in answer.text
        assert await redis.zcard(opening) == 0
        finals = [r for r in server.sent_for(state) if r.method == "PATCH" and r.embed_text]
        assert finals == [answer]  # one answer: the first run told the user nothing
    finally:
        await redis.aclose()
        await runner.cleanup()
