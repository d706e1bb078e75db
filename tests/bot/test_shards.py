"""Two shard processes (`python -m bot` with SHARD_COUNT=2 and SHARD_IDS=0 / 1) against one
Discord-compatible server and one worker: each process gets only its guilds' events,
answers through its own results stream, and a shard killed while its job runs delivers
the answer once it is started again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from redis.asyncio import Redis

from inference.queue import Keys
from inference.worker.testing import SleepEngine
from sandbox.discord import DiscordServer
from sandbox.discord.payloads import shard_of
from sandbox.stack import free_port
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    ROOT,
    bot_env,
    png_bytes,
    running_worker,
    worker_settings,
)
from tests.support.processes import get, samples, stop, until_ready

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

SHARDS = 2
WORK_S = 1.5  # long enough to kill a shard while its job runs


@pytest.fixture
async def server() -> AsyncIterator[DiscordServer]:
    srv = DiscordServer(guild_count=SHARDS, shard_count=SHARDS)
    await srv.start()
    yield srv
    await srv.close()


class Shard:
    """One `python -m bot` process running shard `shard_id` of SHARDS."""

    def __init__(self, server: DiscordServer, prefix: str, shard_id: int) -> None:
        self.shard_id = shard_id
        self.port = free_port()
        self.env = bot_env(
            server,
            prefix,
            METRICS_PORT=str(self.port),
            ATTACHMENT_HTTP_HOSTS="127.0.0.1",
            USER_COOLDOWN_S="0",
            PROGRESS_INTERVAL_S="0.3",
            SHARD_COUNT=str(SHARDS),
            SHARD_IDS=str(shard_id),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(
            subprocess.Popen, [sys.executable, "-m", "bot"], env=self.env, cwd=ROOT
        )
        await until_ready(self.base, timeout_s=30)

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = await asyncio.to_thread(get, self.base + "/metrics")
        assert status == 200
        return samples(text)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(stop, self.proc, 20)


QUEUED = ("palicord_bot_requests_total", (("kind", "slash"), ("outcome", "queued")))
DELIVERED = ("palicord_bot_answers_total", (("outcome", "delivered"),))


async def test_two_shard_processes_each_serve_their_guilds(
    server: DiscordServer, prefix: str, tmp_path: Path
) -> None:
    guilds = server.guilds
    assert [shard_of(g.id, SHARDS) for g in guilds] == [0, 1]
    shards = [Shard(server, prefix, i) for i in range(SHARDS)]
    marks = tmp_path / "batches"
    engine = SleepEngine(WORK_S, mark_path=str(marks))
    async with running_worker(worker_settings(prefix), engine):
        try:
            await asyncio.gather(*(s.start() for s in shards))
            assert server.gateway.ready.is_set()
            assert server.gateway.shards_ready() == {(0, SHARDS), (1, SHARDS)}

            # One request per guild: each reaches, and is answered by, its own shard.
            image = server.attachment(png_bytes_of_a_dot(), "dot.png")
            user = server.user("shard-user")
            states = [
                await server.slash("describe", user=user, guild=g, attachments={"image": image})
                for g in guilds
            ]
            for state in states:
                await answer_for(server, state, timeout_s=20)
            for shard in shards:
                got = await shard.metrics()
                assert got[QUEUED] == 1 and got[DELIVERED] == 1, shard.shard_id

            # Shard 1 dies while its job runs; the answer waits in its stream until it is
            # back under the same (derived) instance id.
            marks.write_text("")
            # A new picture: the same one would be answered from the shared cache at once.
            other = server.attachment(png_bytes_of_a_dot(at=(10, 50)), "dot2.png")
            late = await server.slash(
                "describe", user=user, guild=guilds[1], attachments={"image": other}
            )
            async with asyncio.timeout(20):
                while not marks.read_text():  # noqa: ASYNC110 (a line per started batch)
                    await asyncio.sleep(0.05)
            shards[1].kill()
            keys = Keys(prefix)
            stream = keys.results(f"bot-shards-1-of-{SHARDS}")
            await until_in_stream(stream)
            await shards[1].start()
            await answer_for(server, late, timeout_s=20)
            assert (await shards[1].metrics())[DELIVERED] == 1  # the restarted process
            assert (await shards[0].metrics())[DELIVERED] == 1  # shard 0 did not take it
        finally:
            for shard in shards:
                if shard.proc is not None and shard.proc.poll() is None:
                    assert await shard.stop() == 0


def png_bytes_of_a_dot(at: tuple[int, int] = (32, 32)) -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    image.putpixel(at, (0, 0, 0))
    return png_bytes(image)


async def until_in_stream(stream: str, timeout_s: float = 20.0) -> None:
    """Wait until the worker's answer is in the (dead) shard's results stream."""
    redis = Redis.from_url(REDIS_URL)
    async with redis, asyncio.timeout(timeout_s):
        while not await redis.xlen(stream):  # noqa: ASYNC110 (an entry in Redis)
            await asyncio.sleep(0.05)
