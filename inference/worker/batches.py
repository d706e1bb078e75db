"""A taken batch on its way to the engine, and what the worker keeps of its answers.

`prepare_batch` does everything a batch needs before the device: decoding the jobs (a
malformed or expired one is decided at once), fetching their pictures from Redis (each
kept once, by digest, in the picture store; one gone is a failure of its own), and the
engine's CPU work (`Engine.prepare`: decoding, resizing, tokenising, in the engine's
preparing processes; called from a thread, where it only waits). The pipelined worker
(`inference.worker.service`) calls it for the next batch while the current one
generates, so none of this delays the device. `remember` keeps the answers for identical
requests (`inference.queue.memory`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis

from inference.engine import Engine
from inference.errors import JobFailed, QueueUnavailable
from inference.queue import Job, JobResult, Keys, redis_boundary
from inference.queue.connection import describe
from inference.queue.memory import PICTURE, Memory, origin_of, picture_digest
from inference.queue.scripts import TakenJob
from inference.tasks import InferenceRequest
from inference.worker import outcomes
from inference.worker.outcomes import Outcome

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """A taken batch made ready to run: the outcomes already decided (malformed, expired,
    picture gone), and the jobs to run with their engine-prepared requests."""

    taken: list[TakenJob]
    decided: list[Outcome] = field(default_factory=list)
    jobs: list[tuple[Job, float | None]] = field(default_factory=list)  # with queue wait
    requests: list[InferenceRequest] = field(default_factory=list)


async def prepare_batch(
    taken: list[TakenJob], *, redis: Redis, keys: Keys, engine: Engine, worker_id: str
) -> Batch:
    """Decode the jobs, fetch their pictures, and let the engine prepare them."""
    batch = Batch(taken)
    ready: list[tuple[Job, float | None]] = []
    for tj in taken:
        wait_s = tj.queue_wait_s
        job = outcomes.decode(tj, worker_id)
        if isinstance(job, Outcome):
            batch.decided.append(job)
        elif tj.expired:
            batch.decided.append(outcomes.timed_out(job, worker_id=worker_id, queue_wait_s=wait_s))
        else:
            ready.append((job, wait_s))
    if not ready:
        return batch
    # A job names its kept picture; a version 1 job (an upgrade) has its own copy.
    where = [
        keys.stash(PICTURE, j.picture) if j.picture else keys.image(j.job_id) for j, _ in ready
    ]
    with redis_boundary():
        images = await redis.mget(where)
    for (job, wait_s), image in zip(ready, images, strict=True):
        if image is None:
            gone = JobFailed("The image for this request is no longer available.")
            batch.decided.append(outcomes.failure(job, gone, worker_id=worker_id))
        else:
            batch.jobs.append((job, wait_s))
            batch.requests.append(InferenceRequest(job.spec, image))
    if batch.requests:
        batch.requests = await asyncio.to_thread(engine.prepare, batch.requests)
    return batch


async def remember(
    memory: Memory, model_id: str, answered: list[tuple[InferenceRequest, JobResult, Job]]
) -> None:
    """Keep the answers for identical requests (under the digest the engine computed while
    preparing, else hashed here, with where they were asked); a cache that cannot be
    written is only a missed saving, never a failed job."""
    try:
        await asyncio.gather(
            *(
                memory.keep_answer(
                    job.picture or request.digest or picture_digest(request.image),
                    request.spec,
                    model_id,
                    result,
                    origin=origin_of(job.guild_id, job.user_id),
                )
                for request, result, job in answered
            )
        )
    except QueueUnavailable as exc:
        log.warning("could not keep answers in the cache: %s", describe(exc))
