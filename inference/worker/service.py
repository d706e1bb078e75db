"""The worker loop: take a fair batch, run it on the engine, publish, repeat.

One asyncio task runs batches; a second keeps the worker alive in Redis (heartbeat key,
lease extension, the reaper). The engine's `generate()` blocks, so it runs in a thread
and the keep-alive task goes on extending leases while a long batch runs: a working
worker's jobs are never stolen, a dead one's are reaped once their lease lapses.

A wedged device hangs `generate()` while the event loop runs on, which would extend the
batch's leases forever. So the keep-alive doubles as a watchdog: once a batch has run
longer than `max_batch_run_s` it stops, the leases lapse and other workers retry the jobs,
and `run()` returns EXIT_ENGINE_HUNG. A thread cannot be cancelled, so the process must
then exit at once (see `__main__`) and its supervisor restart it.

Redis failures reach this module only as QueueUnavailable (see
`inference.queue.connection`); the loop backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from redis.asyncio import Redis

from inference.engine import Engine
from inference.errors import QueueUnavailable
from inference.ops import log_ids
from inference.queue import Job, JobResult, Keys
from inference.queue.connection import Backoff, cancel_and_wait, describe
from inference.queue.memory import Memory
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import InferenceRequest
from inference.worker import outcomes
from inference.worker.batches import Batch, prepare_batch, remember
from inference.worker.metrics import WorkerMetrics
from inference.worker.outcomes import Outcome
from inference.worker.presence import Presence, default_worker_id
from inference.worker.runner import FatalEngineError, Watchdog, generate_resilient
from inference.worker.taking import Taker

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK = 0
EXIT_FATAL_ENGINE = 3
EXIT_ENGINE_HUNG = 4
RUN_TIME_SMOOTHING = 0.2  # weight of the newest batch in the run-time moving average
# Heartbeats per heartbeat lifetime: a live worker must miss this many in a row (a stalled
# event loop, a network blip) before others take its jobs.
HEARTBEATS_PER_TTL = 4


class Worker:
    """Serves one engine from the queue until stopped (or, in burst mode, until empty)."""

    def __init__(
        self,
        redis: Redis,
        settings: WorkerSettings,
        engine: Engine,
        *,
        worker_id: str = "",
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._engine = engine
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        self._keys = Keys(settings.key_prefix)
        self._scripts = Scripts(redis, self._keys)
        self._memory = Memory(redis, self._keys, self._scripts, settings)
        self._capabilities = engine.capabilities
        self._taker = Taker(
            redis,
            self._keys,
            self._scripts,
            settings,
            worker_id=self.worker_id,
            capabilities=self._capabilities,
        )
        self._held = self._taker.held  # leased job ids in this worker's hands
        self._stopping = asyncio.Event()
        self._stop_flag = threading.Event()  # the same signal, for the engine thread
        self._run_s_avg = 0.0  # moving average of a batch's engine time
        # Kept after run() (a worker may run again); a hung engine's is left to os._exit.
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="palicord-engine")
        # The next batch, being taken and prepared while one runs (PIPELINE).
        self._upcoming: asyncio.Task[Batch | None] | None = None
        self._watchdog = Watchdog(settings.max_batch_run_s)
        # After a Redis outage every worker's heartbeat may have lapsed: judge others by
        # theirs only once they have all had a heartbeat lifetime to renew it.
        self._heartbeat_reap_from = 0.0
        self.metrics = metrics or WorkerMetrics()
        # For /readyz: warmed up, announced, and the last keep-alive reached Redis.
        self.ready = False
        self.presence = Presence(
            redis,
            self._keys,
            settings,
            scripts=self._scripts,
            worker_id=self.worker_id,
            model_id=engine.model_id,
            capabilities=tuple(sorted(t.value for t in self._capabilities)),
        )

    async def _on_engine_thread(self, call: Callable[..., T], *args: Any) -> T:
        """Run `call` on the engine's one thread: torch on the CPU gives each calling thread
        an OpenMP team, and teams on several threads halve its speed (bench/pipeline.py)."""
        return await asyncio.get_running_loop().run_in_executor(self._engine_thread, call, *args)

    def stop(self) -> None:
        """Finish the batch in hand, hand back unstarted jobs, then return from run()."""
        log.info("worker %s stopping", self.worker_id)
        self.ready = False
        self._stopping.set()
        self._stop_flag.set()

    async def run(self, *, burst: bool = False) -> int:
        """Serve until stop() (or until the queue is empty in burst mode); an exit code."""
        await self._on_engine_thread(self._engine.warmup)
        backoff = Backoff(max_s=self._settings.max_backoff_s)
        while not await self._startup():
            await self._sleep_unless_stopped(backoff.next_delay_s())
            if self._stopping.is_set():
                return EXIT_OK
        keepalive = asyncio.create_task(self._keepalive(), name="worker-keepalive")
        serving = asyncio.create_task(self._serve(backoff, burst=burst), name="worker-serve")
        try:
            await asyncio.wait({serving, keepalive}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():
                # The keep-alive returns only when its watchdog finds the engine hung. The
                # engine's thread runs on regardless; the caller must end the process.
                return EXIT_ENGINE_HUNG
            serving.result()
        except FatalEngineError as exc:
            log.critical("unrecoverable device error, exiting: %s", exc)
            return EXIT_FATAL_ENGINE
        finally:
            await cancel_and_wait((serving, keepalive))
            await self.presence.withdraw()
        return EXIT_OK

    async def _serve(self, backoff: Backoff, *, burst: bool) -> None:
        """Batches until stop(). Pipelined (PIPELINE, the default): while one batch runs on
        the engine, the next is taken, its pictures fetched and prepared, so the device
        does not wait for Redis or the CPU between batches. Its leases are extended like
        the running batch's; on stop it is handed back unstarted."""
        try:
            while not self._stopping.is_set():
                try:
                    upcoming, self._upcoming = self._upcoming, None
                    batch = await (upcoming if upcoming is not None else self._next_batch())
                    if batch is None:
                        if burst and await self._taker.queue_empty():
                            break
                        await self._taker.wait_for_work(self._stopping, burst=burst)
                    else:
                        if self._settings.pipeline:
                            self._upcoming = asyncio.create_task(self._next_batch())
                        await self._execute(batch)
                    backoff.reset()
                except QueueUnavailable as exc:
                    delay_s = backoff.next_delay_s()
                    log.warning(
                        "Redis unavailable (%s); retrying in %.2f s", describe(exc), delay_s
                    )
                    await self._sleep_unless_stopped(delay_s)
        except BaseException:
            if self._upcoming is not None:  # its leases lapse; the reaper requeues its jobs
                self._upcoming.cancel()
                self._upcoming = None
            raise
        await self._hand_back()

    async def _hand_back(self) -> None:
        """Stopping: the batch taken ahead goes back to the front of its lines (its decided
        outcomes are still published), before the running batch's unstarted jobs: it was
        taken after them, and the lines must come back in order."""
        upcoming, self._upcoming = self._upcoming, None
        if upcoming is None:
            return
        try:
            batch = await upcoming
            if batch is not None:
                await self._execute(batch)  # stopping: runs nothing, releases the rest
        except QueueUnavailable as exc:
            log.warning(
                "could not hand back the next batch (%s); its leases will lapse", describe(exc)
            )

    async def run_once(self) -> int:
        """Take one batch (with a short linger) and run it; the number of jobs taken."""
        batch = await self._next_batch()
        if batch is None:
            return 0
        await self._execute(batch)
        return len(batch.taken)

    # --- start and stop ---------------------------------------------------------------

    async def _startup(self) -> bool:
        """Check Redis, announce this worker and reap once; False if Redis cannot be reached.

        The heartbeat is written before the "serving" line is logged, so that a bot that
        sees the line also sees the worker (it refuses requests while none is online). The
        reap comes before the first batch: a worker restarted after a crash puts its dead
        predecessor's jobs back at the front of their lines before it serves anything else."""
        try:
            await self.presence.warn_if_evicting()
            await self.presence.announce()
            try:
                await self.reap(first=True)
            except QueueUnavailable:
                raise
            except Exception:  # not worth refusing to serve over: the keep-alive reaps too
                log.exception("the first reaper pass failed; the keep-alive will try again")
        except QueueUnavailable as exc:
            log.warning(
                "cannot reach Redis at %s: %s", self._settings.redacted_url(), describe(exc)
            )
            return False
        self.ready = True
        log.info(
            "worker %s serving %s (%s) from %s, batch %d, lease %.1f s",
            self.worker_id,
            self._engine.model_id,
            ",".join(sorted(t.value for t in self._capabilities)),
            self._settings.redacted_url(),
            self._settings.batch_size,
            self._settings.lease_s,
        )
        return True

    async def _sleep_unless_stopped(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay_s)

    # --- processing -------------------------------------------------------------------

    async def _next_batch(self) -> Batch | None:
        """A fair batch, taken and made ready to run; None when there was no job."""
        taken = await self._taker.take_batch(run_s_avg=self._run_s_avg, stopping=self._stopping)
        if not taken:
            return None
        self.metrics.batch_size.observe(len(taken))
        ids = [j.job_id for j in taken]
        try:
            with log_ids(job_ids=",".join(ids)):  # a malformed job is logged while preparing
                return await prepare_batch(
                    taken,
                    redis=self._redis,
                    keys=self._keys,
                    engine=self._engine,
                    worker_id=self.worker_id,
                )
        except BaseException:
            # Stop extending these leases: they lapse and whoever is healthy runs the jobs.
            self._held.difference_update(ids)
            raise

    async def _execute(self, batch: Batch) -> None:
        """Run a prepared batch (nothing, when stopping: its jobs go back) and settle it."""
        ids = [j.job_id for j in batch.taken]
        try:
            with log_ids(job_ids=",".join(ids)):
                unstarted: list[str] = []
                if self._stopping.is_set():
                    unstarted = [job.job_id for job, _ in batch.jobs]
                elif batch.jobs:
                    unstarted = await self._run(batch)
                if self._stopping.is_set():
                    await self._hand_back()  # first: see there
                await self._settle(batch.decided, release=unstarted)
        except BaseException:
            self._held.difference_update(ids)  # as in _next_batch: let the leases lapse
            raise

    async def _run(self, batch: Batch) -> list[str]:
        """Run the batch on the engine; adds its outcomes, returns the unstarted ids."""
        requests = batch.requests
        await self._taker.mark_started([job.job_id for job, _ in batch.jobs])
        started = time.perf_counter()
        with self._watchdog.running(len(requests)):
            results = await self._on_engine_thread(
                generate_resilient, self._engine, requests, self._stop_flag
            )
        run_s = time.perf_counter() - started
        self._run_s_avg += RUN_TIME_SMOOTHING * (run_s - self._run_s_avg)
        self.metrics.batch_run.observe(run_s)
        unstarted: list[str] = []
        answered: list[tuple[InferenceRequest, JobResult, Job]] = []
        for (job, wait_s), request, result in zip(batch.jobs, requests, results, strict=True):
            if result is None:
                unstarted.append(job.job_id)
                continue
            job_result = JobResult.success(
                job, result, worker_id=self.worker_id, queue_wait_s=wait_s, run_s=run_s
            )
            batch.decided.append(Outcome(job.job_id, job.reply_to, job_result))
            answered.append((request, job_result, job))
        await remember(self._memory, self._engine.model_id, answered)
        return unstarted

    async def _settle(self, decided: list[Outcome], *, release: list[str]) -> None:
        """Publish outcomes, retrying through Redis outages for about one lease: after that
        the lease has lapsed and another worker answers instead (publishing is idempotent)."""
        backoff = Backoff(max_s=self._settings.max_backoff_s)
        give_up_at = time.monotonic() + self._settings.lease_s
        while True:
            try:
                published = await outcomes.publish(
                    self._scripts, decided, self._settings, self.worker_id
                )
                self.metrics.settled(published)  # not those another worker settled first
                if release:
                    n = await self._scripts.release(self.worker_id, release)
                    log.info("handed %d unstarted jobs back", n)
                break
            except QueueUnavailable as exc:
                if time.monotonic() > give_up_at:
                    log.error("could not publish %d results: %s", len(decided), describe(exc))
                    break
                await asyncio.sleep(backoff.next_delay_s())
        self._held.difference_update([o.job_id for o in decided], release)

    # --- staying alive ----------------------------------------------------------------

    async def _keepalive(self) -> None:
        s = self._settings
        tick_s = min(
            s.lease_s / 3, s.worker_heartbeat_ttl_s / HEARTBEATS_PER_TTL, s.reap_interval_s
        )
        next_reap = 0.0
        while True:
            if self._watchdog.hung():
                return
            try:
                self.metrics.queue(**await self.presence.announce())
                self.ready = True
                if self._held:
                    lost = await self._scripts.extend(self.worker_id, s.lease_s, list(self._held))
                    if lost:
                        # Another worker has them; whichever settles first answers, once.
                        log.warning("lost the lease of %d jobs (reaped): %s", len(lost), lost)
                        self._held.difference_update(lost)
                if time.monotonic() >= next_reap:
                    await self.reap()
                    next_reap = time.monotonic() + s.reap_interval_s
                self.metrics.memory(self._engine.device_memory())
                self.metrics.features(self._engine.feature_cache())
            except QueueUnavailable as exc:
                self.ready = False
                log.warning("keep-alive failed: %s", describe(exc))
                self._heartbeat_reap_from = time.monotonic() + s.worker_heartbeat_ttl_s + tick_s
            except Exception:
                # Only cancellation or the watchdog may end this loop: without it the
                # heartbeat vanishes (the bot sees no worker) and the running batch's leases
                # lapse, so other workers run those jobs again.
                log.exception("keep-alive step failed; carrying on")
            await asyncio.sleep(tick_s)

    async def reap(self, *, first: bool = False) -> int:
        """Requeue jobs of lapsed leases (and of workers whose heartbeat is gone); dead-
        letter those out of attempts. Returns the number requeued. The `first` pass, before
        this process holds any lease, also takes back leases under its own id: a
        predecessor's with the same WORKER_ID."""
        requeued, decided = await outcomes.reap(
            self._scripts,
            self._settings,
            self.worker_id,
            by_heartbeat=time.monotonic() >= self._heartbeat_reap_from,
            presumed_dead=self.worker_id if first else "",
        )
        self.metrics.settled(decided)
        return requeued
