"""What the worker's Prometheus metrics cost: queue throughput with and without them, side
by side in one run.

    .venv/bin/python -m bench.metrics_overhead [--jobs 3000] [--rounds 3]

Each round queues `--jobs` no-op jobs on the Redis at 127.0.0.1:6379 (a key prefix of its
own), then times one in-process worker (NoopEngine, batch 8) draining them in burst mode,
once with the real `WorkerMetrics` and once with every metric replaced by a no-op; the
order alternates between rounds. Prints jobs/s for both and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from redis.asyncio import Redis

from inference.queue import QueueClient
from inference.settings import WorkerSettings
from inference.tasks import TaskSpec
from inference.worker import Worker
from inference.worker.metrics import WorkerMetrics
from inference.worker.testing import NoopEngine

REDIS_URL = "redis://127.0.0.1:6379/0"
SUBMIT_CHUNK = 200


class _Nothing:
    """Stands in for a counter, gauge or histogram, and records nothing."""

    def labels(self, *_: object) -> _Nothing:
        return self

    def inc(self, *_: object) -> None:
        return None

    def observe(self, *_: object) -> None:
        return None

    def set(self, *_: object) -> None:
        return None


class NoMetrics(WorkerMetrics):
    """WorkerMetrics whose every metric is a no-op."""

    def __init__(self) -> None:
        super().__init__()
        for name in (
            "jobs",
            "queue_wait",
            "batch_run",
            "batch_size",
            "queue_depth",
            "guilds_waiting",
            "workers_alive",
            "device_memory",
        ):
            setattr(self, name, _Nothing())


async def drain(redis: Redis, jobs: int, metrics: WorkerMetrics) -> float:
    """Queue `jobs` jobs, then time one worker taking them all; jobs per second."""
    prefix = "{bench-metrics-" + uuid.uuid4().hex[:8] + "}:"
    settings = WorkerSettings(
        redis_url=REDIS_URL,
        key_prefix=prefix,
        max_pending=jobs + 1,
        max_pending_per_guild=jobs + 1,
        max_pending_per_user=jobs + 1,
        batch_size=8,
        linger_s=0,
        metrics_port=0,
    )
    client = QueueClient(redis, settings, instance_id="bench", require_worker=False)
    spec = TaskSpec.build("caption")
    for start in range(0, jobs, SUBMIT_CHUNK):
        batch = [
            client.new_job(spec, guild_id=i % 7, user_id=i % 50)
            for i in range(start, min(jobs, start + SUBMIT_CHUNK))
        ]
        await asyncio.gather(*(client.submit(job, b"img") for job in batch))
    worker = Worker(redis, settings, NoopEngine(), metrics=metrics)
    started = time.perf_counter()
    await worker.run(burst=True)
    elapsed_s = time.perf_counter() - started
    keys = [k async for k in redis.scan_iter(match=prefix + "*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])
    return jobs / elapsed_s


async def main(jobs: int, rounds: int) -> None:
    redis = Redis.from_url(REDIS_URL)
    with_metrics: list[float] = []
    without: list[float] = []
    try:
        await drain(redis, 200, WorkerMetrics())  # warm up Redis's script cache and Python
        for n in range(rounds):
            order = [(with_metrics, WorkerMetrics), (without, NoMetrics)]
            for results, kind in order if n % 2 == 0 else reversed(order):
                results.append(await drain(redis, jobs, kind()))
    finally:
        await redis.aclose()
    print(f"jobs per round                 {jobs}")
    print(f"with metrics      jobs/s       {' '.join(f'{r:.0f}' for r in with_metrics)}")
    print(f"without metrics   jobs/s       {' '.join(f'{r:.0f}' for r in without)}")
    ratio = statistics.median(with_metrics) / statistics.median(without)
    print(f"with / without (medians)       {ratio:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.rounds))
