"""Taking work from the queue: a fair batch with a short linger, suspects alone, marking a
batch started, and the wake-up a worker blocks on while the line is empty.

The jobs taken are added to `held`, the set of leases the worker's keep-alive extends
until their outcomes are settled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection
from typing import cast

from redis.asyncio import Redis

from inference.errors import QueueUnavailable
from inference.queue import Keys, redis_boundary
from inference.queue.connection import describe
from inference.queue.scripts import Scripts, TakenJob, isolate_after
from inference.settings import WorkerSettings
from inference.tasks import Task

log = logging.getLogger(__name__)
SCAN_PER_SLOT = 8  # take() looks at most this many queue entries per batch slot


def holds_a_suspect(taken: list[TakenJob]) -> bool:
    """Whether the batch is a job isolated after several crashes: it runs alone."""
    return any(j.isolated and not j.expired for j in taken)


class Taker:
    """Takes batches for one worker, and tells it when there may be more."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        settings: WorkerSettings,
        *,
        worker_id: str,
        capabilities: Collection[Task],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._settings = settings
        self._worker_id = worker_id
        self._capabilities = capabilities
        self.held: set[str] = set()  # leased job ids in this worker's hands

    async def take_batch(self, *, run_s_avg: float, stopping: asyncio.Event) -> list[TakenJob]:
        """Up to BATCH_SIZE jobs; a partial batch waits a little for more, at most a
        fraction of what a batch costs (`run_s_avg`), so a fast engine never waits."""
        s = self._settings
        taken = await self._take(s.batch_size, fresh=True)
        live = sum(not j.expired for j in taken)
        linger_s = min(s.linger_s, s.linger_ratio * run_s_avg)
        if live == 0 or live >= s.batch_size or linger_s <= 0 or holds_a_suspect(taken):
            return taken
        loop = asyncio.get_running_loop()
        until = loop.time() + linger_s
        while live < s.batch_size and not stopping.is_set():
            remaining_s = until - loop.time()
            if remaining_s < 0.001:
                break
            if not await self.wait_for_wakeup(remaining_s):
                break
            more = await self._take(s.batch_size - live, fresh=False)
            taken.extend(more)
            live += sum(not j.expired for j in more)
        return taken

    async def _take(self, count: int, *, fresh: bool) -> list[TakenJob]:
        taken = await self._scripts.take(
            self._worker_id,
            count,
            self._settings.lease_s,
            self._capabilities,
            SCAN_PER_SLOT * count,
            fresh=fresh,
            isolate_after=isolate_after(self._settings.max_attempts),
        )
        self.held.update(j.job_id for j in taken)
        return taken

    async def mark_started(self, job_ids: list[str]) -> None:
        """Mark a batch started: should this process die while it runs, these jobs are
        the suspects, not those of the batch taken ahead (docs/reliability.md, "Blame")."""
        try:
            await self._scripts.begin(self._worker_id, job_ids)
        except QueueUnavailable as exc:
            # Unmarked, a crash now would blame nobody; not worth holding the batch for.
            log.warning("could not mark the batch started: %s", describe(exc))

    async def wait_for_work(self, stopping: asyncio.Event, *, burst: bool) -> None:
        """Block until a submission wakes us, a timeout passes, or `stopping` is set."""
        s = self._settings
        timeout_s = min(s.idle_wait_s, s.reap_interval_s) if burst else s.idle_wait_s
        pop = asyncio.create_task(self.wait_for_wakeup(timeout_s))
        stop = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait({pop, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pop, stop):
            if task not in done:
                task.cancel()
        await asyncio.gather(pop, stop, return_exceptions=True)
        if pop in done:
            pop.result()  # re-raise a Redis error for the backoff loop

    async def wait_for_wakeup(self, timeout_s: float) -> bool:
        """BLPOP the wakeup list (a float timeout: Redis 6+); True if a token came."""
        with redis_boundary():
            # redis-py types the timeout as int, but Redis 6+ takes fractional seconds.
            call = self._redis.blpop([self._keys.wakeup], timeout=timeout_s)  # type: ignore[arg-type]
            reply = await cast("Awaitable[list[bytes] | None]", call)
        return reply is not None

    async def queue_empty(self) -> bool:
        """Nothing queued and nothing running, anywhere: a burst run may end."""
        with redis_boundary():
            pipe = self._redis.pipeline(transaction=False)
            pipe.llen(self._keys.guild_ring)
            pipe.llen(self._keys.background_ring)
            pipe.zcard(self._keys.leases)
            ring, background, leases = await pipe.execute()
        return int(ring) == 0 and int(background) == 0 and int(leases) == 0
