"""The job queue on the tests' Redis (tests/queue/ and tests/worker/): submitting small jobs,
collecting results, and a worker that records its batches. The fixtures that set the queue
up on a test's own key prefix are in tests/conftest.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

from inference.queue import Delivery, JobStatus, QueueClient
from inference.tasks import TaskSpec
from inference.worker import Worker
from inference.worker.batches import Batch

REDIS_URL = "redis://127.0.0.1:6379/0"
BOT_ID = "bot-test"
T = TypeVar("T")


async def aw(call: Awaitable[T] | T) -> T:
    """Await a redis-py command (whose stubs mix the sync and async return types)."""
    return await cast(Awaitable[T], call)


async def submit(
    client: QueueClient, guild: str = "1", user: str = "10", task: str = "caption", **kw: object
) -> JobStatus:
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
        self.batches_taken.append([j.job_id for j in batch.taken])
        await super()._execute(batch)
