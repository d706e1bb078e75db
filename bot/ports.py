"""The narrow view of the job queue the bot depends on; `inference.queue.QueueClient`
satisfies it, and tests may pass anything else that does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from inference.jobs import Job, WorkerInfo
from inference.queue import Delivery, JobStatus, Submitted
from inference.tasks import TaskSpec


class JobQueue(Protocol):
    def new_job(
        self,
        spec: TaskSpec,
        *,
        guild_id: int | str | None,
        user_id: int | str,
        channel_id: int | str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> Job: ...

    async def submit(self, job: Job, image: bytes) -> Submitted: ...

    async def status(self, job_id: str) -> JobStatus: ...

    async def workers(self) -> list[WorkerInfo]: ...

    async def pending(self) -> int: ...

    def results(
        self, *, block_ms: int | None = ..., count: int = ...
    ) -> AsyncIterator[Delivery]: ...

    async def ack(self, *deliveries: Delivery) -> None: ...
