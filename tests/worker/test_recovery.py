"""A crash costs seconds, not a lease: a dead worker's jobs go back in line as soon as its
heartbeat is gone, at the front of their own lines; a frozen worker's late results never
answer twice; a job that kills its worker each time ends in the dead letters alone.

Workers run as real processes (`python -m inference.worker` with a stand-in engine) and
are killed with real signals. Leases are 30 s here, so only the heartbeat can explain a
recovery within seconds."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis

from inference.errors import JobFailed
from inference.queue import QueueClient
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import Task
from tests.support.processes import spawn_worker
from tests.support.queue import aw, collect, submit

pytestmark = pytest.mark.slow  # worker processes killed and restarted

LEASE_S = 30  # long: a recovery within seconds can only come from the heartbeat
# What the issue asks for is 5 s from the kill; the bound allows for a loaded CI machine.
RECOVERY_BOUND_S = 8.0


def spawn(prefix: str, worker_id: str, *options: str, **env: str) -> subprocess.Popen[bytes]:
    settings = {"WORKER_ID": worker_id, "BATCH_SIZE": "8", "LEASE_S": str(LEASE_S), "LINGER_S": "0"}
    return spawn_worker(prefix, "sleep_engine", *options, **{**settings, **env})


@contextmanager
def reaped(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll what other processes make true (they have no other way to tell us)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_killed_workers_jobs_run_again_within_seconds_quiet_guild_first(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    prefix = worker_settings.key_prefix
    flood = [(await submit(queue_client, guild="A", user=str(i % 3))).job_id for i in range(60)]
    quiet = (await submit(queue_client, guild="B", user="q")).job_id
    first = spawn(prefix, "w1", "sleep_s=2")
    second = None
    with reaped(first):
        await until(lambda: _owned_by(redis, queue_client, quiet, "w1"))
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        second = spawn(prefix, "w2", "sleep_s=1")
        with reaped(second):
            await until(lambda: _owned_by(redis, queue_client, quiet, "w2"))
            recovered_s = time.monotonic() - killed_at
            still_queued = sum([(await queue_client.status(j)).state == "queued" for j in flood])
            results = await collect(queue_client, 61, timeout_s=60)
    print(f"recovered {recovered_s:.1f} s after the kill, {still_queued} flood jobs queued")
    assert recovered_s < RECOVERY_BOUND_S
    # The quiet guild did not wait for the flood: many of its jobs were still in line.
    assert still_queued >= 8
    counts = Counter(d.result.job_id for d in results)
    assert set(counts) == {*flood, quiet} and set(counts.values()) == {1}
    by_id = {d.result.job_id: d.result for d in results}
    assert by_id[quiet].ok and by_id[quiet].attempt in (1, 2)  # 1: it had not started


BATCH_S = 1.0  # the stand-in engine's time per batch


async def test_a_worker_killed_holding_two_batches_is_recovered_in_full_batches(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # The pipelined worker holds the batch it runs and the one it took ahead: 16 jobs.
    # Recovered one job per batch they would cost 8 + 3 batches; in full batches, 4. It is
    # restarted at once under its configured WORKER_ID (systemd, a StatefulSet), so its
    # first reaper pass takes the dead one's jobs back before it serves anything.
    prefix = worker_settings.key_prefix
    flood = [(await submit(queue_client, guild="A", user=f"f{i}")).job_id for i in range(24)]
    quiet = (await submit(queue_client, guild="B", user="q")).job_id
    first = spawn(prefix, "w1", f"sleep_s={BATCH_S}")
    with reaped(first):

        async def holds_two_batches() -> bool:
            owners = await aw(redis.hvals(queue_client.keys.lease_owner))
            return owners.count(b"w1") == 16

        await until(holds_two_batches)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()  # wall clock, as the heartbeat's started_at
    second = spawn(prefix, "w1", f"sleep_s={BATCH_S}")
    with reaped(second):

        async def restarted() -> bool:
            return any(w.started_at > killed_at for w in await queue_client.workers())

        await until(restarted)
        alive_at = time.monotonic()
        answered = await collect_timed(queue_client, 25, timeout_s=60)
    last_s = max(at for _, at in answered) - alive_at
    order = [job_id for job_id, _ in sorted(answered, key=lambda pair: pair[1])]
    print(f"last answer {last_s:.1f} s after the new worker's heartbeat")
    assert sorted(order) == sorted([*flood, quiet])
    assert order.index(quiet) < 8  # in the first batch after the restart
    assert last_s < 7 * BATCH_S  # 4 batches and the reaper's start; one per job: 11+


async def collect_timed(
    client: QueueClient, count: int, *, timeout_s: float
) -> list[tuple[str, float]]:
    """(job id, monotonic time read) of `count` results, each one answered once."""
    out: list[tuple[str, float]] = []
    async with asyncio.timeout(timeout_s):
        async for delivery in client.results(block_ms=100):
            out.append((delivery.result.job_id, time.monotonic()))
            await client.ack(delivery)
            if len(out) >= count:
                break
    return out


async def _owned_by(redis: Redis, client: QueueClient, job_id: str, worker: str) -> bool:
    owner = await redis.hget(client.keys.lease_owner, job_id)  # type: ignore[misc]
    return owner is not None and owner.decode() == worker


async def test_a_frozen_worker_never_answers_twice_and_carries_on(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    prefix = worker_settings.key_prefix
    ids = [(await submit(queue_client, user=str(i))).job_id for i in range(8)]
    frozen = spawn(prefix, "w-frozen", "sleep_s=1")
    rescuer = None
    with reaped(frozen):
        await until(lambda: _owned_by(redis, queue_client, ids[0], "w-frozen"))
        frozen.send_signal(signal.SIGSTOP)  # past its heartbeat's lifetime (3 s)
        rescuer = spawn(prefix, "w-rescuer", "sleep_s=0")
        with reaped(rescuer):
            first = await collect(queue_client, 8, timeout_s=30)
            frozen.send_signal(signal.SIGCONT)  # it wakes with results nobody wants
            await asyncio.sleep(2.0)
            rescuer.send_signal(signal.SIGTERM)
            assert rescuer.wait(10) == 0
            # The thawed worker carries on: it serves a new job alone.
            later = await submit(queue_client, user="late")
            [after] = await collect(queue_client, 1, timeout_s=20)
    assert Counter(d.result.job_id for d in first) == Counter(ids)  # each exactly once
    assert after.result.job_id == later.job_id and after.result.worker_id == "w-frozen"
    assert await redis.xlen(queue_client.keys.results("bot-test")) == 0  # no late extras


async def test_a_poison_job_is_dead_lettered_and_its_neighbours_are_served(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    prefix = worker_settings.key_prefix
    good = [(await submit(queue_client, user=str(i))).job_id for i in range(7)]
    poison = (await submit(queue_client, user="p", task="answer", question="poison")).job_id
    fast = {"WORKER_HEARTBEAT_TTL_S": "1", "REAP_INTERVAL_S": "0.2", "IDLE_WAIT_S": "0.2"}
    crashes = 0

    async def answered() -> int:
        return int(await redis.xlen(queue_client.keys.results("bot-test")))

    async with asyncio.timeout(60):
        while await answered() < 8:
            proc = spawn(prefix, f"w{crashes}", "sleep_s=0.1", "poison=poison", **fast)
            with reaped(proc):
                while proc.poll() is None and await answered() < 8:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                if proc.poll() is not None:
                    assert proc.returncode == -signal.SIGKILL
                    crashes += 1
    results = await collect(queue_client, 8)
    by_id = {d.result.job_id: d.result for d in results}
    assert set(by_id) == {*good, poison}
    assert all(by_id[j].ok for j in good)
    assert isinstance(by_id[poison].exception(), JobFailed)
    assert by_id[poison].task is Task.ANSWER
    # Its first run took its batch down with it; then it ran alone, and died alone.
    assert crashes == worker_settings.max_attempts
    letters = await aw(redis.lrange(queue_client.keys.dead_letter, 0, -1))
    [letter] = [json.loads(e) for e in letters]
    assert (letter["job_id"], letter["reason"]) == (poison, "max_attempts")


async def test_a_worker_restarted_under_the_same_id_takes_its_predecessors_jobs_back(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # systemd or a StatefulSet restarts it with its configured WORKER_ID: renewing that
    # id's heartbeat must not make the dead process's leases look alive.
    prefix = worker_settings.key_prefix
    ids = [(await submit(queue_client, user=str(i))).job_id for i in range(4)]
    first = spawn(prefix, "gpu-0", "sleep_s=30")
    with reaped(first):
        await until(lambda: _owned_by(redis, queue_client, ids[0], "gpu-0"))
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = time.monotonic()
    again = spawn(prefix, "gpu-0", "sleep_s=0")
    with reaped(again):
        results = await collect(queue_client, 4, timeout_s=20)
        recovered_s = time.monotonic() - killed_at
    assert sorted(d.result.job_id for d in results) == sorted(ids)
    assert recovered_s < RECOVERY_BOUND_S  # not the 30 s lease


async def test_a_worker_back_from_a_redis_outage_does_not_rob_the_others(
    redis: Redis, queue_client: QueueClient
) -> None:
    scripts = Scripts(redis, queue_client.keys)
    await submit(queue_client)
    # Leased by a worker whose heartbeat has lapsed (as every heartbeat does while Redis
    # is away): judged by heartbeat, its jobs would go back in line at once.
    assert len(await scripts.take("silent", 1, 30.0, Task, 8)) == 1
    assert (await scripts.reap("back", 3, 30.0, 10, by_heartbeat=False)).requeued == 0
    assert (await scripts.reap("back", 3, 30.0, 10, by_heartbeat=True)).requeued == 1
