"""Shared fixtures: a real Redis on 127.0.0.1:6379 (DB 0), isolated per test by a unique
key prefix whose keys are deleted afterwards. Other suites use the same Redis at the same
time, so nothing here ever flushes a database. Also: starting worker processes, and
scraping the operations endpoints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from inference.queue import Delivery, QueueClient, QueueSettings, Submitted
from inference.settings import WorkerSettings
from inference.tasks import TaskSpec
from inference.worker import Worker
from inference.worker.batches import Batch

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent


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


# --- the job queue on that Redis (used by test_queue*.py and test_worker*.py) ------------

BOT_ID = "bot-test"
T = TypeVar("T")


async def aw(call: Awaitable[T] | T) -> T:
    """Await a redis-py command (whose stubs mix the sync and async return types)."""
    return await cast(Awaitable[T], call)


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


async def submit(
    client: QueueClient, guild: str = "1", user: str = "10", task: str = "caption", **kw: object
) -> Submitted:
    """Submit one small job."""
    spec = TaskSpec.build(task, **kw)  # type: ignore[arg-type]
    job = client.new_job(spec, guild_id=guild, user_id=user, context={"token": f"t-{guild}"})
    return await client.submit(job, b"image-bytes")


async def collect(client: QueueClient, count: int, *, timeout_s: float = 10.0) -> list[Delivery]:
    """Read and acknowledge `count` results (fails the test after `timeout_s`)."""
    out: list[Delivery] = []

    async def read() -> None:
        async for delivery in client.results(block_ms=100):
            out.append(delivery)
            await client.ack(delivery)
            if len(out) >= count:
                return

    await asyncio.wait_for(read(), timeout_s)
    return out


class RecordingWorker(Worker):
    """A Worker that remembers the job ids of each batch it took, for fairness tests.
    (The product's Worker keeps no per-batch history: it would grow with every job.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_taken: list[list[str]] = []

    async def _execute(self, batch: Batch) -> None:
        self.batches_taken.append([j.job_id for j in batch.taken.jobs])
        await super()._execute(batch)


def spawn_worker(prefix: str, engine: str, *options: str, **env: str) -> subprocess.Popen[bytes]:
    """`python -m inference.worker` as a real process, serving this test's key prefix with a
    stand-in engine of `inference.worker.testing` (`engine` names its factory); `options`
    are its KEY=VALUE engine options, `env` settings as environment variables."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "IDLE_WAIT_S": "0.2",
        "METRICS_PORT": "0",  # several at once on one host: no port to share
        **env,
    }
    args = [sys.executable, "-m", "inference.worker", "--log-level", "WARNING", "--engine"]
    args += [f"inference.worker.testing:{engine}"]
    for option in options:
        args += ["--engine-option", option]
    return subprocess.Popen(args, env=full_env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it outstays `timeout_s`; the exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# --- the operations endpoints (test_*_metrics.py) ------------------------------------


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def until_ready(base: str, *, timeout_s: float) -> None:
    """Poll a process's /readyz until it answers 200 (it has no other way to tell us)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if (await asyncio.to_thread(get, base + "/readyz"))[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
