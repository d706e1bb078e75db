"""Queue benchmark: Palicord's queue vs saq vs arq, a no-op job, one Redis, one run.

    .venv/bin/python -m bench.queue [--jobs 10000] [--latency-jobs 2000] [--write]

Each system gets its own key prefix / queue name and its worker in a separate process
(started before timing and warmed up with a few jobs), so the client and the worker do not
share an event loop, the same way for all three.

- Throughput: enqueue `--jobs` no-op jobs concurrently (in chunks of 500), then wait until
  the client has seen every result through the library's own result path (Palicord: its
  results stream, acknowledged in groups; saq: `Queue.map`'s status polling; arq:
  `Job.result()` per job). jobs/s = jobs / (first submit → last result).
- Latency: `--latency-jobs` single jobs one after another, submit → result seen by the
  client; p50/p99.

Library settings are their defaults (saq concurrency 10, arq max_jobs 10, Palicord
batch 8) except the polling intervals of arq (worker poll_delay 5 ms, result poll 1 ms)
and saq's client (1 ms), lowered from 0.5 s so that polling does not dominate.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from inference.queue import QueueClient
from inference.settings import WorkerSettings
from inference.tasks import TaskSpec
from inference.worker import Worker
from inference.worker.testing import NoopEngine

REDIS_URL = "redis://127.0.0.1:6379/0"
CHUNK = 500
DOCS = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


@dataclass
class Row:
    name: str
    jobs_per_s: float
    p50_ms: float
    p99_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def time_sequential(n: int, one: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await one()
        out.append((time.perf_counter() - start) * 1000)
    return out


# --- Palicord -----------------------------------------------------------------------------


def palicord_settings(prefix: str, batch_size: int) -> WorkerSettings:
    caps = 1_000_000
    return WorkerSettings(
        redis_url=REDIS_URL,
        key_prefix=prefix,
        max_pending=caps,
        max_pending_per_guild=caps,
        max_pending_per_user=caps,
        batch_size=batch_size,
    )


def palicord_worker(prefix: str, batch_size: int) -> None:
    async def main() -> None:
        redis = Redis.from_url(REDIS_URL)
        await Worker(redis, palicord_settings(prefix, batch_size), NoopEngine()).run()

    asyncio.run(main())


async def bench_palicord(n: int, n_latency: int, batch_size: int) -> Row:
    prefix = "{palicord-bench-" + uuid.uuid4().hex[:8] + "}:"
    proc = multiprocessing.get_context("spawn").Process(
        target=palicord_worker, args=(prefix, batch_size), daemon=True
    )
    proc.start()
    redis = Redis.from_url(REDIS_URL)
    client = QueueClient(redis, palicord_settings(prefix, batch_size), instance_id="bench")
    spec = TaskSpec.build("caption")
    results = client.results(block_ms=1000)
    try:
        async with asyncio.timeout(60):
            for _ in range(100_000):  # until the worker process has started and beats
                if await client.workers():
                    break
                await asyncio.sleep(0.05)

        async def submit(i: int) -> None:
            await client.submit(client.new_job(spec, guild_id=i % 10, user_id=i % 100), b"x")

        async def one() -> None:
            await submit(0)
            await client.ack(await anext(results))

        await time_sequential(50, one)  # warm-up
        start = time.perf_counter()
        for base in range(0, n, CHUNK):
            await asyncio.gather(*(submit(i) for i in range(base, min(n, base + CHUNK))))
        seen, group = 0, []
        while seen < n:
            group.append(await anext(results))
            seen += 1
            if len(group) >= 100 or seen == n:
                await client.ack(*group)
                group = []
        elapsed = time.perf_counter() - start
        latencies = await time_sequential(n_latency, one)
    finally:
        proc.terminate()
        proc.join(10)
        await results.aclose()
        await delete_matching(redis, prefix + "*")
        await redis.aclose()
    name = f"palicord (batch {batch_size})"
    return Row(name, n / elapsed, percentile(latencies, 50), percentile(latencies, 99))


# --- saq --------------------------------------------------------------------------------


async def noop(ctx: Any, **_: Any) -> None:
    return None


def saq_worker(name: str) -> None:
    from saq import Queue
    from saq import Worker as SaqWorker

    async def main() -> None:
        queue = Queue.from_url(REDIS_URL, name=name)
        await SaqWorker(queue, functions=[("noop", noop)]).start()

    asyncio.run(main())


async def bench_saq(n: int, n_latency: int) -> Row:
    from saq import Queue

    name = "palicord-bench-saq-" + uuid.uuid4().hex[:8]
    proc = multiprocessing.get_context("spawn").Process(
        target=saq_worker, args=(name,), daemon=True
    )
    proc.start()
    queue = Queue.from_url(REDIS_URL, name=name)
    try:

        async def one() -> None:
            await queue.apply("noop", timeout=10, poll_interval=0.001)

        await time_sequential(50, one)  # warm-up (also waits for the worker to start)
        start = time.perf_counter()
        await queue.map("noop", [{} for _ in range(n)], poll_interval=0.001)
        elapsed = time.perf_counter() - start
        latencies = await time_sequential(n_latency, one)
    finally:
        proc.terminate()
        proc.join(10)
        await delete_matching(queue.redis, f"saq:{name}*")  # type: ignore[attr-defined]
        await queue.disconnect()
    return Row("saq", n / elapsed, percentile(latencies, 50), percentile(latencies, 99))


# --- arq --------------------------------------------------------------------------------


def arq_worker(queue_name: str) -> None:
    from arq.connections import RedisSettings
    from arq.worker import Worker as ArqWorker

    async def main() -> None:
        worker = ArqWorker(
            functions=[noop],
            queue_name=queue_name,
            redis_settings=RedisSettings.from_dsn(REDIS_URL),
            poll_delay=0.005,
            handle_signals=False,
            log_results=False,
            keep_result=600,
        )
        await worker.async_run()

    asyncio.run(main())


async def bench_arq(n: int, n_latency: int) -> Row:
    from arq import create_pool
    from arq.connections import RedisSettings

    queue_name = "palicord-bench-arq-" + uuid.uuid4().hex[:8]
    proc = multiprocessing.get_context("spawn").Process(
        target=arq_worker, args=(queue_name,), daemon=True
    )
    proc.start()
    pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=queue_name)
    job_ids: list[str] = []
    try:

        async def enqueue() -> Any:
            job = await pool.enqueue_job("noop")
            assert job is not None  # None only for a duplicate job id
            job_ids.append(job.job_id)
            return job

        async def one() -> None:
            await (await enqueue()).result(timeout=10, poll_delay=0.001)

        await time_sequential(50, one)  # warm-up
        start = time.perf_counter()
        jobs = []
        for base in range(0, n, CHUNK):
            jobs += await asyncio.gather(*(enqueue() for _ in range(base, min(n, base + CHUNK))))
        for job in jobs:
            await job.result(timeout=60, poll_delay=0.001)
        elapsed = time.perf_counter() - start
        latencies = await time_sequential(n_latency, one)
    finally:
        proc.terminate()
        proc.join(10)
        for base in range(0, len(job_ids), 500):
            chunk = job_ids[base : base + 500]
            await pool.delete(*[f"arq:result:{j}" for j in chunk], *[f"arq:job:{j}" for j in chunk])
        await pool.delete(queue_name, f"{queue_name}:health-check")
        await pool.aclose()
    return Row("arq", n / elapsed, percentile(latencies, 50), percentile(latencies, 99))


# --- report -----------------------------------------------------------------------------


async def delete_matching(redis: Any, pattern: str) -> None:
    keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
    for base in range(0, len(keys), 500):
        await redis.delete(*keys[base : base + 500])


async def machine() -> str:
    redis = Redis.from_url(REDIS_URL)
    info = await redis.info("server")
    await redis.aclose()
    return await asyncio.to_thread(_machine, str(info["redis_version"]))


def _machine(redis_version: str) -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return (
        f"{cpu}, nproc={nproc} (os.cpu_count={os.cpu_count()}), shared machine; "
        f"Python {platform.python_version()}, Redis {redis_version} on 127.0.0.1"
    )


def table(rows: list[Row], n: int, n_latency: int) -> str:
    lines = [
        f"| system | throughput, {n:,} jobs (jobs/s) | p50 latency (ms) | p99 latency (ms) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r.name} | {r.jobs_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |" for r in rows]
    lines.append(f"\nLatency: {n_latency:,} sequential single jobs, submit → result at the client.")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--latency-jobs", type=int, default=2_000)
    parser.add_argument("--write", action="store_true", help="append to docs/performance.md")
    args = parser.parse_args()
    rows = [
        await bench_palicord(args.jobs, args.latency_jobs, 8),
        await bench_palicord(args.jobs, args.latency_jobs, 32),
        await bench_saq(args.jobs, args.latency_jobs),
        await bench_arq(args.jobs, args.latency_jobs),
    ]
    report = table(rows, args.jobs, args.latency_jobs)
    where = await machine()
    print(report)
    print(f"\nMachine: {where}")
    if args.write:
        with DOCS.open("a", encoding="utf-8") as f:
            f.write(f"\n### Queue benchmark, {time.strftime('%Y-%m-%d %H:%M')}\n\n{report}\n\n")
            f.write(f"Machine: {where}\n")


if __name__ == "__main__":
    asyncio.run(main())
