"""Shared fixtures, found by name (no test module imports a fixture).

A real Redis on 127.0.0.1:6379 (DB 0), isolated per test by a unique key prefix whose keys
are deleted afterwards. Other suites use the same Redis at the same time, so nothing here
ever flushes a database. On it: the job queue (`redis_prefix`, `queue_settings`,
`worker_settings`, `queue_client`), and the sandbox's Discord-compatible server with the
real bot and an in-process worker (`server`, `prefix`, `bot`, `worker`). The helpers these
tests call are in tests/support/; tests/sandbox/conftest.py adds the browser."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.queue import QueueClient, QueueSettings
from inference.settings import WorkerSettings
from inference.worker.service import Worker
from inference.worker.testing import ShapesOracle
from sandbox.discord.actions import DiscordServer
from tests.support.discord_server import harness
from tests.support.queue import BOT_ID, REDIS_URL


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m "not slow"`, a module marked slow as a whole is not even imported: several
    load torch and transformers at import, seconds of collection for no test."""
    if config.getoption("markexpr") != "not slow" or collection_path.suffix != ".py":
        return None
    return "\npytestmark = pytest.mark.slow" in collection_path.read_text() or None


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """An async Redis client (bytes replies)."""
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own (with a cluster hash tag); its keys are deleted after."""
    prefix = "{palicord-test-" + uuid.uuid4().hex + "}:"
    try:
        yield prefix
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*", count=1000)]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])


# --- the job queue on that Redis (tests/queue/, tests/worker/) ---------------------------


@pytest.fixture
def queue_settings(redis_prefix: str) -> QueueSettings:
    """Queue settings on this test's prefix, with caps large enough not to interfere."""
    return QueueSettings(
        key_prefix=redis_prefix,
        max_pending=10_000,
        max_pending_per_guild=10_000,
        max_pending_per_user=10_000,
    )


@pytest.fixture
def worker_settings(queue_settings: QueueSettings) -> WorkerSettings:
    """The same queue seen by a worker, with a 1 s lease so that reaping is quick."""
    return WorkerSettings(
        **queue_settings.model_dump(),
        batch_size=4,
        lease_s=1.0,
        reap_interval_s=0.2,
        idle_wait_s=0.2,
        max_attempts=3,
    )


@pytest.fixture
def queue_client(redis: Redis, queue_settings: QueueSettings) -> QueueClient:
    """A bot-side client that does not require a live worker."""
    return QueueClient(redis, queue_settings, instance_id=BOT_ID, require_worker=False)


# --- the sandbox's Discord-compatible server, the bot and a worker (tests/bot/, ...) -----


@pytest.fixture
async def server() -> AsyncIterator[DiscordServer]:
    srv = DiscordServer()
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = harness.unique_prefix()
    yield value
    redis = Redis.from_url(harness.REDIS_URL)
    async with redis:
        await harness.delete_prefix(redis, value)


@pytest.fixture
async def bot(server: DiscordServer, prefix: str) -> AsyncIterator[PalicordBot]:
    async with harness.running_bot(harness.bot_settings(server, prefix)) as running:
        yield running


@pytest.fixture
async def worker(prefix: str) -> AsyncIterator[Worker]:
    settings = harness.worker_settings(prefix)
    async with harness.running_worker(settings, ShapesOracle()) as running:
        yield running
