"""`python -m inference.worker` as a real process: SIGKILL mid-batch, SIGTERM, CUDA exit,
hung engine exit."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from inference.errors import NoWorkerAlive
from inference.queue import QueueClient, QueueSettings
from inference.settings import WorkerSettings
from inference.worker import EXIT_ENGINE_HUNG, Worker
from inference.worker.testing import NoopEngine
from tests.support.processes import spawn_worker
from tests.support.queue import BOT_ID, REDIS_URL, collect, submit

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

ROOT = Path(__file__).resolve().parents[2]


def start_worker(
    prefix: str,
    *options: str,
    batch_size: int = 4,
    lease_s: float = 1.0,
    max_batch_run_s: float = 600.0,
) -> subprocess.Popen[bytes]:
    env = {
        "BATCH_SIZE": str(batch_size),
        "LEASE_S": str(lease_s),
        "MAX_BATCH_RUN_S": str(max_batch_run_s),
        "REAP_INTERVAL_S": "0.2",
    }
    return spawn_worker(prefix, "sleep_engine", *options, **env)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll a condition a subprocess makes true (it has no other way to tell us)."""
    async with asyncio.timeout(timeout_s):
        for _ in itertools.count():
            if await predicate():
                return
            await asyncio.sleep(0.02)


async def test_sigkill_mid_batch_every_job_completes_exactly_once(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    keys = queue_client.keys
    ids = [(await submit(queue_client, guild=str(i % 2), user=str(i))).job_id for i in range(12)]
    marks = tmp_path / "batches"
    proc = start_worker(worker_settings.key_prefix, "sleep_s=0.4", f"mark_path={marks}")
    try:
        # Let it publish its first batch and start a second, then kill it mid-batch.
        async def second_batch_running() -> bool:
            started = await asyncio.to_thread(count_marks, marks)
            return started >= 2 and await redis.zcard(keys.leases) > 0

        await wait_for(second_batch_running)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(5) == -signal.SIGKILL
    finally:
        proc.kill()
    done_before = await redis.xlen(keys.results("bot-test"))
    assert 4 <= done_before < 12

    survivor = Worker(redis, worker_settings, NoopEngine())
    assert await survivor.run(burst=True) == 0  # waits for the lapsed leases, reaps, runs
    results = await collect(queue_client, 12)
    counts = Counter(d.result.job_id for d in results)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert any(d.result.attempt == 2 for d in results)  # the killed batch ran again
    assert await redis.xlen(keys.results("bot-test")) == 0
    assert await queue_client.pending() == 0


async def test_sigterm_finishes_the_batch_and_hands_unstarted_jobs_back(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    keys = queue_client.keys
    ids = [(await submit(queue_client)).job_id for _ in range(6)]
    marks = tmp_path / "batches"
    # OOM above 2 requests: the batch of 4 runs as two halves; SIGTERM lands in the first.
    proc = start_worker(
        worker_settings.key_prefix, "sleep_s=0.5", "oom_above=2", f"mark_path={marks}"
    )
    try:
        await wait_for(lambda: _started(marks))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert [d.result.job_id for d in await collect(queue_client, 2)] == ids[:2]
    assert await redis.zcard(keys.leases) == 0
    for place, job_id in enumerate(ids[2:], start=1):
        assert (await queue_client.status(job_id)).place == place  # back, in order
    assert await redis.zcard(keys.workers) == 0  # it said goodbye


def count_marks(marks: Path) -> int:
    """Batches the engine has started (one line each)."""
    return marks.read_text().count("\n") if marks.exists() else 0


async def _started(marks: Path) -> bool:
    return await asyncio.to_thread(count_marks, marks) > 0


async def test_cuda_error_exits_non_zero(
    queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    await submit(queue_client)
    proc = start_worker(worker_settings.key_prefix, "cuda_error=1")
    try:
        # Generous: the subprocess imports torch first, slow on a loaded 2-core machine.
        assert await asyncio.to_thread(proc.wait, 60) == 3
    finally:
        proc.kill()


async def test_hung_engine_exits_and_its_jobs_complete_elsewhere_exactly_once(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings, tmp_path: Path
) -> None:
    keys = queue_client.keys
    ids = [(await submit(queue_client, user=str(i))).job_id for i in range(3)]
    marks = tmp_path / "batches"
    # The engine sleeps an hour: a wedged GPU, while the event loop keeps running.
    proc = start_worker(
        worker_settings.key_prefix, "sleep_s=3600", f"mark_path={marks}", max_batch_run_s=2.0
    )
    try:
        await wait_for(lambda: _started(marks))
        assert await redis.zcard(keys.workers) == 1
        assert await asyncio.to_thread(proc.wait, 8) == EXIT_ENGINE_HUNG
    finally:
        proc.kill()
    assert count_marks(marks) == 1
    assert await redis.zcard(keys.workers) == 0  # the bot no longer counts it
    assert not [k async for k in redis.scan_iter(match=keys.worker("w").removesuffix("w") + "*")]
    assert await redis.zcard(keys.leases) == 3  # left to lapse, not handed back

    survivor = Worker(redis, worker_settings, NoopEngine())
    assert await survivor.run(burst=True) == 0  # waits for the lapsed leases, reaps, runs
    results = await collect(queue_client, 3)
    counts = Counter(d.result.job_id for d in results)
    assert set(counts) == set(ids) and set(counts.values()) == {1}
    assert all(d.result.ok and d.result.attempt == 2 for d in results)
    assert await redis.xlen(keys.results("bot-test")) == 0
    assert await queue_client.pending() == 0


def start_logging_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    """A noop worker whose log lines (stderr) the test reads."""
    args = [sys.executable, "-m", "inference.worker", "--engine", "noop", "--log-level", "INFO"]
    return subprocess.Popen(args, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)


async def test_a_worker_is_visible_to_the_bot_once_it_says_it_is_serving(
    redis: Redis, queue_settings: QueueSettings
) -> None:
    # The bot refuses requests ("no vision worker is online") while no heartbeat is fresh:
    # from the moment the worker logs that it serves, a request must be accepted.
    client = QueueClient(redis, queue_settings, instance_id=BOT_ID, require_worker=True)
    with pytest.raises(NoWorkerAlive):
        await submit(client)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": queue_settings.key_prefix,
        "METRICS_PORT": "0",
    }
    proc = start_logging_worker(env)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            while "serving" not in (line := await asyncio.to_thread(proc.stderr.readline)):
                assert line, "the worker exited before serving"
        submitted = await submit(client)  # at once: no retry, no sleep
        assert submitted.place == 1
        assert [w.model_id for w in await client.workers()] == ["noop"]
    finally:
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 10) == 0
