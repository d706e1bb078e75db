"""The worker loop in-process against a real Redis: leases, reaping, dead letters, OOM,
fatal device errors, a hung engine, stopping, reconnecting, timings."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Sequence

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from inference.errors import GenerationError, JobFailed
from inference.queue import QueueClient
from inference.queue.keys import Keys
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import InferenceRequest, InferenceResult, Task, TaskSpec
from inference.worker import EXIT_ENGINE_HUNG, EXIT_FATAL_ENGINE, EXIT_OK, Worker
from inference.worker.testing import NoopEngine, SleepEngine
from tests.support.queue import REDIS_URL, aw, collect, submit


async def lapse_once(scripts: Scripts, worker: Worker) -> None:
    """A 'dead worker' takes one job with a lease that lapses at once, starts it alone (and
    dies with it); then reap."""
    taken = await scripts.take("dead-worker", 1, 0.0, [Task.CAPTION], 8)
    assert len(taken) == 1
    assert await scripts.begin("dead-worker", [taken[0].job_id]) == 1
    await worker.reap()


async def test_reaper_puts_lapsed_jobs_back_at_the_front(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    first = await submit(queue_client)
    second = await submit(queue_client)
    scripts = Scripts(redis, queue_client.keys)
    worker = Worker(redis, worker_settings, NoopEngine())
    await lapse_once(scripts, worker)
    assert (await queue_client.status(first.job_id)).place == 1
    assert (await queue_client.status(second.job_id)).place == 2
    retaken = await scripts.take("w2", 1, 30.0, [Task.CAPTION], 8)
    assert [(j.job_id, j.attempt) for j in retaken] == [(first.job_id, 2)]


async def test_dead_letter_after_max_attempts_with_an_error_result(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    job_id = (await submit(queue_client)).job_id
    scripts = Scripts(redis, queue_client.keys)
    worker = Worker(redis, worker_settings, NoopEngine())
    for _ in range(worker_settings.max_attempts):
        await lapse_once(scripts, worker)
    [delivery] = await collect(queue_client, 1)
    assert delivery.result.job_id == job_id
    assert isinstance(delivery.result.exception(), JobFailed)
    assert delivery.result.attempt == worker_settings.max_attempts
    [entry] = [json.loads(e) for e in await aw(redis.lrange(queue_client.keys.dead_letter, 0, -1))]
    assert entry["job_id"] == job_id and entry["reason"] == "max_attempts"
    # Kept to debug the job, not to answer it: no interaction token, and not forever.
    assert json.loads(entry["data"])["task"] == "caption" and "t-1" not in json.dumps(entry)
    ttl_s = await redis.ttl(queue_client.keys.dead_letter)
    assert 0 < ttl_s <= worker_settings.dead_letter_ttl_s
    assert await queue_client.pending() == 0
    assert await redis.zcard(queue_client.keys.leases) == 0


@pytest.mark.slow
async def test_a_working_worker_keeps_its_leases(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    settings = worker_settings.model_copy(update={"lease_s": 0.5})
    ids = {(await submit(queue_client, user=str(i))).job_id for i in range(2)}
    slow = SleepEngine(1.5)  # three leases long
    thief = SleepEngine()
    working = asyncio.create_task(Worker(redis, settings, slow).run(burst=True))
    async with asyncio.timeout(10):  # the slow worker has taken both jobs
        while await redis.zcard(queue_client.keys.leases) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await Worker(redis, settings, thief).run(burst=True)  # reaps every 0.2 s meanwhile
    await working
    results = await collect(queue_client, 2)
    assert {d.result.job_id for d in results} == ids
    assert thief.batches == [] and slow.batches == [2]
    assert all(d.result.attempt == 1 for d in results)


async def test_two_workers_share_one_queue_exactly_once(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ids = [(await submit(queue_client, guild=str(i % 3), user=str(i))).job_id for i in range(40)]
    one, two = SleepEngine(0.01), SleepEngine(0.01)
    await asyncio.gather(
        Worker(redis, worker_settings, one).run(burst=True),
        Worker(redis, worker_settings, two).run(burst=True),
    )
    got = [d.result.job_id for d in await collect(queue_client, 40)]
    assert sorted(got) == sorted(ids)
    assert one.batches and two.batches
    assert sum(one.batches) + sum(two.batches) == 40


async def test_out_of_memory_splits_the_batch(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    for i in range(4):
        await submit(queue_client, user=str(i))
    engine = SleepEngine(oom_above=1)
    await Worker(redis, worker_settings, engine).run(burst=True)
    assert engine.batches == [1, 1, 1, 1]  # 4 -> 2 + 2 -> 1 + 1 + 1 + 1: three splits
    assert all(d.result.ok for d in await collect(queue_client, 4))


async def test_out_of_memory_on_a_single_request_fails_only_that_request(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    await submit(queue_client)
    await Worker(redis, worker_settings, SleepEngine(oom_above=0)).run(burst=True)
    [delivery] = await collect(queue_client, 1)
    assert isinstance(delivery.result.exception(), GenerationError)


async def test_fatal_cuda_error_exits_non_zero(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    await submit(queue_client)
    code = await Worker(redis, worker_settings, SleepEngine(cuda_error=True)).run(burst=True)
    assert code == EXIT_FATAL_ENGINE
    # the job stays leased: its lease lapses and another worker retries it
    assert await redis.zcard(queue_client.keys.leases) == 1


class HungEngine(SleepEngine):
    """Blocks in generate() until released: a wedged device, with the event loop alive."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        self.started.set()
        self.release.wait()
        return super().generate(requests)


@pytest.mark.slow
async def test_hung_engine_gives_up_its_leases_and_returns_a_distinct_code(
    redis: Redis,
    queue_client: QueueClient,
    worker_settings: WorkerSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = queue_client.keys
    job_id = (await submit(queue_client)).job_id
    settings = worker_settings.model_copy(update={"lease_s": 0.5, "max_batch_run_s": 1.0})
    engine = HungEngine()
    worker = Worker(redis, settings, engine)
    try:
        with caplog.at_level(logging.ERROR):
            code = await asyncio.wait_for(worker.run(), 5)
        assert code == EXIT_ENGINE_HUNG
        assert engine.started.is_set() and "batch of 1 requests has run" in caplog.text
        assert not await redis.exists(keys.worker(worker.worker_id))
        assert await redis.zcard(keys.workers) == 0
        # No longer extended: the lease lapses within one lease_s of the watchdog firing.
        [(leased, expires_at)] = await redis.zrange(keys.leases, 0, -1, withscores=True)
        assert leased.decode() == job_id
        seconds, micros = await redis.time()
        assert expires_at <= seconds + micros / 1e6 + settings.lease_s
    finally:
        engine.release.set()  # let the thread end, or the test's loop waits for it


def test_max_batch_run_s_must_exceed_the_lease(worker_settings: WorkerSettings) -> None:
    fields = worker_settings.model_dump() | {"lease_s": 5.0, "max_batch_run_s": 5.0}
    with pytest.raises(ValueError, match="MAX_BATCH_RUN_S"):
        WorkerSettings(**fields)


class GatedEngine(SleepEngine):
    """Signals when a batch starts; OOMs above two requests so a batch runs in halves."""

    def __init__(self) -> None:
        super().__init__(0.3, oom_above=2)
        self.started = threading.Event()

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        if len(requests) <= 2:
            self.started.set()
        return super().generate(requests)


async def test_stop_finishes_the_running_half_and_hands_the_rest_back(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ids = [(await submit(queue_client)).job_id for _ in range(4)]
    engine = GatedEngine()
    worker = Worker(redis, worker_settings, engine)
    run = asyncio.create_task(worker.run())
    assert await asyncio.to_thread(engine.started.wait, 5)
    worker.stop()
    assert await asyncio.wait_for(run, 5) == EXIT_OK
    done = [d.result.job_id for d in await collect(queue_client, 2)]
    assert done == ids[:2]
    for place, job_id in enumerate(ids[2:], start=1):
        assert (await queue_client.status(job_id)).place == place
        assert int(await aw(redis.hget(queue_client.keys.job(job_id), "a")) or -1) == 0
    assert await redis.zcard(queue_client.keys.leases) == 0
    assert not await redis.exists(queue_client.keys.worker(worker.worker_id))


async def test_worker_reconnects_after_losing_redis(
    queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    name = "palicord-test-worker-" + uuid.uuid4().hex[:8]
    own = Redis.from_url(REDIS_URL, client_name=name)
    admin = Redis.from_url(REDIS_URL)
    worker = Worker(own, worker_settings, NoopEngine())
    run = asyncio.create_task(worker.run())
    try:
        await submit(queue_client)
        await collect(queue_client, 1)
        # Kill only this worker's connections (others share this Redis).
        killed = 0
        for client in await admin.client_list():
            if client.get("name") == name:
                await admin.client_kill_filter(_id=client["id"])
                killed += 1
        assert killed >= 1
        await submit(queue_client)
        [after] = await collect(queue_client, 1)
        assert after.result.ok
    finally:
        worker.stop()
        assert await asyncio.wait_for(run, 5) == EXIT_OK
        await own.aclose()
        await admin.aclose()


async def test_results_carry_their_timings(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    for i in range(6):
        await submit(queue_client, user=str(i))
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    results = [d.result for d in await collect(queue_client, 6)]
    assert all(r.ok and r.attempt == 1 for r in results)
    assert all(r.queue_wait_s is not None and r.queue_wait_s >= 0 for r in results)
    assert all(r.run_s is not None and r.run_s >= 0 for r in results)
    # A batch's jobs share one run time; six jobs at batch size 4 take at least two batches.
    assert len({r.run_s for r in results}) >= 2


async def test_warns_when_redis_may_evict(
    redis: Redis,
    worker_settings: WorkerSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shared Redis's config must not change, so its CONFIG GET reply is stood in for.
    worker = Worker(redis, worker_settings, NoopEngine())

    async def lru(*_: object) -> dict[str, str]:
        return {"maxmemory-policy": "allkeys-lru"}

    async def disabled(*_: object) -> dict[str, str]:
        raise redis_errors.ResponseError("unknown command 'CONFIG'")

    with caplog.at_level(logging.INFO):
        monkeypatch.setattr(redis, "config_get", lru)
        await worker.presence.warn_if_evicting()
        monkeypatch.setattr(redis, "config_get", disabled)
        await worker.presence.warn_if_evicting()
    assert "allkeys-lru" in caplog.text and "noeviction" in caplog.text
    assert "not checked" in caplog.text


async def test_worker_waits_for_redis_at_start_and_stops_cleanly(
    worker_settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    worker = Worker(nowhere, worker_settings, NoopEngine())
    real_startup = worker._startup
    failures = 0
    failed_twice = asyncio.Event()

    async def counted_startup() -> bool:
        nonlocal failures
        ok = await real_startup()
        failures += not ok
        if failures >= 2:
            failed_twice.set()
        return ok

    monkeypatch.setattr(worker, "_startup", counted_startup)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(failed_twice.wait(), 5)  # it keeps trying, with backoff
    assert not run.done()
    worker.stop()
    assert await asyncio.wait_for(run, 5) == EXIT_OK
    await nowhere.aclose()


async def test_reaped_jobs_go_back_in_submission_order(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # Ids ascending in submission order: ties in the lease set are ordered by id, so
    # requeueing in that order would reverse the user's line.
    ids = [f"job{i}" for i in range(4)]
    for job_id in ids:
        job = queue_client.new_job(TaskSpec.build("caption"), guild_id=1, user_id=10)
        await queue_client.submit(dataclasses.replace(job, job_id=job_id), b"img")
    scripts = Scripts(redis, queue_client.keys)
    assert len(await scripts.take("dead-worker", 4, 0.0, Task, 32)) == 4  # lapsed at once
    assert await Worker(redis, worker_settings, NoopEngine()).reap() == 4
    places = [(await queue_client.status(job_id)).place for job_id in ids]
    assert places == [1, 2, 3, 4]


async def test_keepalive_outlives_an_unexpected_error(
    redis: Redis, worker_settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = Worker(redis, worker_settings, NoopEngine())
    real_reap = worker.reap
    calls = 0
    reaped_again = asyncio.Event()

    async def flaky_reap() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise redis_errors.ResponseError("WRONGTYPE Operation against a key")
        reaped_again.set()
        return await real_reap()

    monkeypatch.setattr(worker, "reap", flaky_reap)
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(reaped_again.wait(), 5)
        assert await redis.exists(Keys(worker_settings.key_prefix).worker(worker.worker_id))
    finally:
        worker.stop()
        assert await asyncio.wait_for(run, 5) == EXIT_OK


async def test_worker_state_does_not_grow_with_the_jobs_it_serves(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    worker = Worker(redis, worker_settings, NoopEngine())

    async def serve(jobs: int) -> None:
        for i in range(jobs):
            await submit(queue_client, user=str(i % 40))
        while await worker.run_once():
            pass
        await collect(queue_client, jobs)

    def collection_sizes() -> dict[str, int]:
        # Every container the worker holds, however it is named.
        return {
            name: len(value)
            for name, value in vars(worker).items()
            if isinstance(value, list | dict | set | tuple | bytes | str)
        }

    await serve(8)
    after_a_few = collection_sizes()
    await serve(48)  # a dozen batches more
    assert collection_sizes() == after_a_few
