"""The bot with `python -m inference.worker` as a separate process, fairness between
guilds, and (when the checkpoint exists) the real demo model."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.detection import iou
from inference.queue import Keys, QueueClient
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, boxes, reply_answer
from tests.support.discord_server.harness import (
    REDIS_URL,
    one_shape_scene,
    png_bytes,
    running_worker,
    worker_settings,
)
from tests.support.processes import spawn_worker, stop

pytestmark = pytest.mark.slow  # the bot, workers and Redis as processes

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "models" / "palicord-tiny"


@pytest.fixture
def worker_process(prefix: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn_worker(prefix, "oracle_engine", LINGER_S="0")
    yield proc
    stop(proc)


async def wait_for_workers(prefix: str, timeout_s: float = 20.0) -> None:
    """The subprocess's only sign of life is its heartbeat key in Redis."""
    redis = Redis.from_url(REDIS_URL)
    async with redis:
        probe = QueueClient(redis, worker_settings(prefix), instance_id="probe")
        async with asyncio.timeout(timeout_s):
            while not await probe.workers():  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def test_with_worker_process(
    server: DiscordServer,
    bot: PalicordBot,
    prefix: str,
    worker_process: subprocess.Popen[bytes],
) -> None:
    await wait_for_workers(prefix)
    scene = one_shape_scene(seed=51)
    shape = scene.shapes[0]
    image = server.attachment(png_bytes(scene.image), "w.png")
    state = await server.slash(
        "detect", user=server.user("xena"), attachments={"image": image}, objects=shape.kind
    )
    [found] = boxes(await answer_for(server, state))
    assert iou(found["box"], shape.box) >= 0.5


async def test_a_flooding_guild_does_not_hold_up_another(
    server: DiscordServer, bot: PalicordBot, prefix: str
) -> None:
    scene = one_shape_scene(seed=52)
    image = server.attachment(png_bytes(scene.image), "f.png")
    busy, quiet = server.guilds
    batch_size = 2
    settings = worker_settings(prefix, batch_size=batch_size)
    async with running_worker(settings, ShapesOracle(sleep_s=0.15)):
        flood = [
            await server.slash(
                "describe", user=server.user(f"f{i}"), guild=busy, attachments={"image": image}
            )
            for i in range(12)
        ]
        for state in flood:
            await server.wait_for_callback(state)
        other = await server.slash(
            "describe", user=server.user("yuri"), guild=quiet, attachments={"image": image}
        )
        answered = await answer_for(server, other, timeout_s=20)
        done_before = [
            s for s in flood if any(r.embed_text and r.at < answered.at for r in server.sent_for(s))
        ]
        # Round robin between guilds: the quiet guild's job is in the next batch taken, so
        # at most the batch running when it arrived, the one already taken ahead of it
        # (the pipelined worker prepares one batch ahead), and one more go before it.
        assert len(done_before) <= 3 * batch_size, len(done_before)
        await asyncio.gather(*(answer_for(server, s, timeout_s=30) for s in flood))


def start_oracle_worker(prefix: str, worker_id: str, sleep_s: float) -> subprocess.Popen[bytes]:
    env = {"WORKER_ID": worker_id, "BATCH_SIZE": "8", "LINGER_S": "0"}
    return spawn_worker(prefix, "oracle_engine", f"sleep_s={sleep_s}", **env)


async def test_a_worker_killed_mid_batch_loses_no_request_and_the_quiet_guild_goes_first(
    server: DiscordServer, bot: PalicordBot, prefix: str
) -> None:
    # Issue 11's scenario: a flood from one guild, one request from another, the worker
    # SIGKILLed while that request is in its batch, and restarted the way a supervisor
    # does (systemd waits RestartSec=5 s; here just past the 3 s heartbeat lifetime).
    image = server.attachment(png_bytes(one_shape_scene(seed=54).image), "k.png")
    busy, quiet = server.guilds
    keys = Keys(prefix)
    redis = Redis.from_url(REDIS_URL)
    first = start_oracle_worker(prefix, "w-first", sleep_s=1.0)
    second = None
    try:
        await wait_for_workers(prefix)
        flood = [
            await server.slash(
                "describe", user=server.user(f"k{i}"), guild=busy, attachments={"image": image}
            )
            for i in range(24)
        ]
        lone = await server.slash(
            "describe", user=server.user("lone"), guild=quiet, attachments={"image": image}
        )

        async def quiet_job_running() -> bool:
            for job_id in await redis.hgetall(keys.lease_owner):
                guild = await redis.hget(keys.job(job_id.decode()), "g")
                if guild == str(quiet.id).encode():
                    return True
            return False

        async with asyncio.timeout(20):
            while not await quiet_job_running():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        await asyncio.sleep(3.5)
        second = start_oracle_worker(prefix, "w-second", sleep_s=0.2)
        restarted_at = time.monotonic()  # the dead worker's earlier answers are all out
        every = [*flood, lone]
        answers = await asyncio.gather(*(answer_for(server, s, timeout_s=30) for s in every))
        for state in every:  # exactly one answer each
            finals = [r for r in server.sent_for(state) if r.method == "PATCH" and r.embed_text]
            assert len(finals) == 1
        after_kill = sorted(
            (i for i in range(len(every)) if answers[i].at > restarted_at),
            key=lambda i: answers[i].at,
        )
        # The killed batch went back to the front: the quiet guild's request is answered
        # in the restarted worker's first batch (alone: it may be what killed the worker),
        # not after the flood's requests that were still queued.
        assert after_kill.index(len(every) - 1) == 0
        assert len(after_kill) >= 8
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        await redis.aclose()


@pytest.fixture
async def demo_worker(prefix: str) -> AsyncIterator[None]:
    if not (DEMO_MODEL / "config.json").exists():
        pytest.skip("the demo checkpoint (models/palicord-tiny) is not built")
    from tests.support.demo import demo_engine  # imports torch: only when the model exists

    async with running_worker(worker_settings(prefix), demo_engine()):
        yield


async def test_demo_model_caption_ask_detect(
    server: DiscordServer, bot: PalicordBot, demo_worker: None
) -> None:
    scene = one_shape_scene(seed=53, size=(224, 224))
    shape = scene.shapes[0]
    user = server.user("zed")
    file = server.attachment(png_bytes(scene.image), "demo.png")

    since = server.recorder.next_seq()
    msg = await server.post_message(user, attachments=[file], mention_bot=True)
    caption = await reply_answer(server, msg, since=since, timeout_s=60)
    assert shape.color in caption.text and shape.kind in caption.text

    state = await server.slash(
        "ask", user=user, attachments={"image": file}, question="what color is the shape?"
    )
    assert shape.color in (await answer_for(server, state, timeout_s=60)).text

    state = await server.slash("detect", user=user, attachments={"image": file}, objects=shape.kind)
    found = boxes(await answer_for(server, state, timeout_s=60))
    assert found and max(iou(d["box"], shape.box) for d in found) >= 0.5

    state = await server.message_command("Describe image", msg, user=user)
    assert shape.kind in (await answer_for(server, state, timeout_s=60)).text
