"""The bot's metrics and health: requests by kind and outcome, acknowledgement latency,
answers, scraped over HTTP and parsed with prometheus-client's own parser; and
`python -m bot` serving /healthz and /readyz."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from prometheus_client import generate_latest

from bot.client import PalicordBot
from inference.ops import serve_ops
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from sandbox.stack import free_port
from tests.support.discord_server.expect import answer_for, error_for, reply_answer
from tests.support.discord_server.harness import bot_env, one_shape_scene, png_bytes
from tests.support.processes import ROOT, get, samples, until_ready


async def test_requests_are_counted_by_kind_and_outcome(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    image = server.attachment(png_bytes(one_shape_scene(seed=71).image), "m.png")
    user = server.user("mo")
    slash = await server.slash("describe", user=user, attachments={"image": image})
    await answer_for(server, slash)
    fake = server.attachment(b"just text, not a picture", "fake.png")
    refused = await server.slash("describe", user=server.user("ne"), attachments={"image": fake})
    await error_for(server, refused)
    since = server.recorder.next_seq()
    message = await server.post_message(server.user("ot"), attachments=[image], mention_bot=True)
    await reply_answer(server, message, since=since)
    menu = await server.message_command("Describe image", message, user=server.user("pa"))
    await answer_for(server, menu)

    ops = serve_ops("127.0.0.1", free_port(), bot.metrics.registry, bot.ready_to_serve)
    assert ops is not None
    try:
        base = f"http://127.0.0.1:{ops.port}"
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        requests = "palicord_bot_requests_total"
        menu_queued = (requests, (("kind", "context_menu"), ("outcome", "queued")))
        # A request is counted once submit returns; a cached answer may be out before.
        async with asyncio.timeout(5):
            while True:
                got = samples((await asyncio.to_thread(get, base + "/metrics"))[1])
                if menu_queued in got:
                    break
                await asyncio.sleep(0.05)
    finally:
        ops.close()
    assert got[(requests, (("kind", "slash"), ("outcome", "queued")))] == 1
    assert got[(requests, (("kind", "slash"), ("outcome", "refused")))] == 1
    assert got[(requests, (("kind", "mention"), ("outcome", "queued")))] == 1
    assert got[(requests, (("kind", "context_menu"), ("outcome", "queued")))] == 1
    assert got[("palicord_interaction_ack_seconds_count", ())] == 3
    assert got[("palicord_bot_answers_total", (("outcome", "delivered"),))] == 3
    assert all(name.startswith("palicord_") for name, _ in got)


async def test_interaction_webhook_errors_are_counted(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    # Interaction edits go through discord.py's webhook adapter, not the REST client.
    image = server.attachment(png_bytes(one_shape_scene(seed=72).image), "x.png")
    since = server.recorder.next_seq()
    state = await server.slash("describe", user=server.user("ex"), attachments={"image": image})
    server.expire(state)  # every edit with its token now fails with 401
    await server.recorder.wait_for(
        lambda r: r.key == "POST /channels/{channel_id}/messages" and bool(r.payload.get("embeds")),
        since=since,
    )
    got = samples(generate_latest(bot.metrics.registry).decode())
    assert got[("palicord_discord_http_errors_total", (("status", "401"),))] >= 1


def start_bot(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bot"], env=env, cwd=ROOT)


@pytest.mark.slow
async def test_the_bot_process_serves_health_and_readiness(
    server: DiscordServer, prefix: str
) -> None:
    port = free_port()
    env = bot_env(server, prefix, METRICS_PORT=str(port))
    proc = start_bot(env)
    base = f"http://127.0.0.1:{port}"
    try:
        await until_ready(base, timeout_s=30)
        assert server.gateway.ready.is_set()
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        status, text = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200 and "palicord_bot_requests" in text
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
