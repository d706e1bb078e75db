"""Run the real bot (and a real worker) against the fake Discord and the real Redis.

Each test gets its own key prefix, so tests share the Redis on 127.0.0.1:6379 with other
suites without FLUSHDB; the prefix's keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image
from redis.asyncio import Redis

from bot.client import PalicordBot
from bot.settings import BotSettings
from inference.demo.shapes import Scene, make_scene
from inference.engine import Engine
from inference.queue import QueueClient, connect
from inference.settings import WorkerSettings
from inference.worker.service import Worker
from sandbox.discord.actions import DiscordServer
from sandbox.web import Sandbox

ROOT = Path(__file__).resolve().parents[3]
REDIS_PORT = 6379
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
READY_TIMEOUT_S = 15.0


def unique_prefix() -> str:
    # A hash tag like the default "{palicord}:", unique per test.
    return "{ptest-" + uuid.uuid4().hex[:12] + "}:"


async def delete_prefix(redis: Redis, prefix: str) -> None:
    """Delete this test's keys only (never FLUSHDB: the Redis is shared)."""
    async for key in redis.scan_iter(match=prefix.replace("[", "\\[") + "*", count=500):
        await redis.delete(key)


def bot_settings(server: DiscordServer, prefix: str, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = {
        "discord_token": server.token,
        "redis_url": REDIS_URL,
        "key_prefix": prefix,
        "discord_api_base": server.api_base,
        "discord_gateway_url": server.gateway_url,
        "attachment_http_hosts": ("127.0.0.1",),
        "discord_cdn_url": server.cdn.url,  # stickers and custom emoji
        "instance_id": "bot-" + uuid.uuid4().hex[:8],
        "user_cooldown_s": 0.0,
        "progress_interval_s": 0.3,
        "max_image_bytes": 2 * 1024 * 1024,
    }
    values.update(overrides)
    return BotSettings(**values)


def bot_env(server: DiscordServer, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a `python -m bot` process on the fake Discord and this prefix."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": server.token,
        "DISCORD_API_BASE": server.api_base,
        "DISCORD_GATEWAY_URL": server.gateway_url,
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        **extra,
    }


def worker_settings(prefix: str, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "redis_url": REDIS_URL,
        "key_prefix": prefix,
        "linger_s": 0.0,
        "idle_wait_s": 0.2,
    }
    values.update(overrides)
    return WorkerSettings(**values)


@contextlib.asynccontextmanager
async def running_bot(settings: BotSettings) -> AsyncIterator[PalicordBot]:
    """The bot as `python -m bot` builds it, started and READY; closed afterwards."""
    redis = connect(settings)
    async with redis, aiohttp.ClientSession() as http_session:
        queue = QueueClient(redis, settings, instance_id=settings.instance_id)
        bot = PalicordBot(
            settings=settings,
            redis=redis,
            http_session=http_session,
            queue=queue,
            guild_ready_timeout_s=0.05,
        )
        async with bot:
            task = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
            ready = asyncio.create_task(bot.wait_until_ready())
            done, _ = await asyncio.wait(
                {task, ready}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if ready not in done:
                ready.cancel()
                if task in done:
                    task.result()  # raise the start-up error
                raise AssertionError("the bot did not become ready")
            try:
                yield bot
            finally:
                await bot.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_sandbox(*, notice: str, samples: dict[str, bytes]) -> AsyncIterator[Sandbox]:
    """The sandbox's page and API on a Discord-compatible server of two guilds."""
    server = DiscordServer(
        guild_names=("Shapes Club", "Art Lounge"), extra_channels=("art",), keep_records=1000
    )
    page = Sandbox(server, notice=notice, samples=samples)
    await server.start(more_routes=page.routes)
    try:
        yield page
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def running_worker(
    settings: WorkerSettings,
    engine: Engine,
    *,
    worker_id: str = "",
    kind: type[Worker] = Worker,
) -> AsyncIterator[Worker]:
    """An in-process worker (of class `kind`) serving `engine`; it has registered by the
    time this yields."""
    redis = connect(settings)
    async with redis:
        worker = kind(redis, settings, engine, worker_id=worker_id or uuid.uuid4().hex[:8])
        task = asyncio.create_task(worker.run())
        probe = QueueClient(redis, settings, instance_id="probe")
        async with asyncio.timeout(10):
            # Registration is a heartbeat key in Redis: nothing to await but the key.
            while not await probe.workers():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        try:
            yield worker
        finally:
            worker.stop()
            await asyncio.wait_for(task, 10)


def png_bytes(image: Image.Image, fmt: str = "PNG", **save: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def noisy_png(size: int = 300, seed: int = 1) -> bytes:
    """A picture PNG cannot compress: its annotated copy may need the JPEG fallback."""
    rng = random.Random(seed)
    return png_bytes(Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)))


def one_shape_scene(seed: int = 7, size: tuple[int, int] = (160, 160)) -> Scene:
    """A demo scene with exactly one shape."""
    return make_scene(random.Random(seed), size=size, min_shapes=1, max_shapes=1)
