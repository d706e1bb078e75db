"""From results to answers: consume this bot instance's results stream and deliver each
request's one answer.

A request of N images is answered once all N have an outcome (a result, or an error
recorded when it could not be queued). Outcomes are collected in Redis (`RequestStore`),
so results that arrive after a restart still complete their request. Results are handled
concurrently (up to MAX_HANDLING at once) and answers with pictures are drawn a few at a
time (MAX_DRAWING), so one slow drawing or a slow Discord never holds up the other
answers. Boxes are drawn on the display copy the worker sends with the result; for a
result without one (an older worker), on the picture kept in Redis for follow-ups
(`inference.queue.memory`, by the digest in the result's context), read only while
drawing and reduced to display size before it is drawn on. The bot keeps no picture in
memory between intake and answer and never downloads one again: a picture gone from Redis
too is answered with its boxes as JSON and a note. Results of other kinds of work
(automatic alt text) name a route (`ROUTE_FIELD`) and go to its handler instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable

from bot.answer import Answer, ItemAnswer, compose
from bot.errors import BotRestarted
from bot.followups import follow_up_view
from bot.metrics import BotMetrics
from bot.progress import ProgressBoard
from bot.replies import ItemContext, Replies
from bot.request_store import RequestStore
from inference.errors import MalformedMessage, PalicordError
from inference.ops import log_ids
from inference.queue import Delivery, JobResult, JobState, QueueClient
from inference.queue.connection import Backoff, cancel_and_wait, describe
from inference.queue.memory import PICTURE_FIELD, Memory

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0
DELIVERY_TIMEOUT_S = 60.0
# Results handled at once; reading the stream waits while all are busy. Most of them wait
# on Discord or Redis, not on this process.
MAX_HANDLING = 64
# Answers with pictures composed at once: each holds a display-sized picture or two
# (~10-30 MB) while it is drawn and encoded in a thread, and, for a result without the
# worker's display copy, the kept upload read from Redis (up to MAX_IMAGE_BYTES each).
MAX_DRAWING = 2
# A result whose handling fails this often for a reason other than Redis (a bug) is left
# unacknowledged, for the next run of the bot to try again.
MAX_HANDLE_ATTEMPTS = 3
RECENT_WAITS = 200
# How long one task may hold a request's answer to itself while sending it; a task that
# dies while sending lets another try after this.
SEND_LEASE_S = DELIVERY_TIMEOUT_S + 30
ROUTE_FIELD = "via"  # in a job's context: which handler in `Deliverer.routes` answers it


class NotSent(Exception):
    """The answer did not reach Discord this time (or another task is sending it): its
    result stays unacknowledged and is handled again."""


class Deliverer:
    """Turns results into answers on Discord."""

    def __init__(
        self,
        *,
        queue: QueueClient,
        store: RequestStore,
        replies: Replies,
        progress: ProgressBoard,
        memory: Memory,
        metrics: BotMetrics | None = None,
    ) -> None:
        self._queue = queue
        self._store = store
        self._replies = replies
        self._progress = progress
        self._memory = memory
        self._metrics = metrics or BotMetrics()
        self._recent_waits: deque[float] = deque(maxlen=RECENT_WAITS)
        self._started_at = time.time()
        self._swept = False
        self._handling: dict[str, asyncio.Task[None]] = {}  # by stream entry id
        self._slots = asyncio.Semaphore(MAX_HANDLING)
        self._drawing = asyncio.Semaphore(MAX_DRAWING)
        self.routes: dict[str, Callable[[JobResult], Awaitable[None]]] = {}

    def typical_wait_s(self) -> float | None:
        """Median time from queued to answered over recent results, if any."""
        return statistics.median(self._recent_waits) if self._recent_waits else None

    async def run(self) -> None:
        """Read results forever, each handled in a task of its own, riding out Redis
        outages (cancel to stop: the results being handled stop too)."""
        backoff = Backoff(max_s=RETRY_MAX_S, first_s=RETRY_FIRST_S)
        try:
            while True:
                try:
                    if not self._swept:
                        await self.answer_orphans()
                        self._swept = True
                    async for delivery in self._queue.results():
                        backoff.reset()
                        # Read again after an outage while still being handled: leave it.
                        if delivery.entry_id not in self._handling:
                            await self._slots.acquire()
                            self._start(delivery)
                except PalicordError as exc:
                    delay_s = backoff.next_delay_s()
                    log.warning(
                        "results stream unavailable (%s); retrying in %.1fs",
                        describe(exc),
                        delay_s,
                    )
                except Exception:  # a bug in reading must not stop all deliveries
                    delay_s = backoff.next_delay_s()
                    log.exception("results loop failed; retrying in %.1fs", delay_s)
                await asyncio.sleep(delay_s)
        finally:
            await cancel_and_wait(list(self._handling.values()))

    def _start(self, delivery: Delivery) -> None:
        task = asyncio.create_task(self._handle_and_ack(delivery))
        self._handling[delivery.entry_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._handling.pop(delivery.entry_id, None)
            self._slots.release()

        task.add_done_callback(done)

    async def _handle_and_ack(self, delivery: Delivery) -> None:
        """Handle one result and acknowledge it, waiting out Redis outages (handling
        again is safe: only one answer is ever sent)."""
        backoff = Backoff(max_s=RETRY_MAX_S, first_s=RETRY_FIRST_S)
        failures = 0
        while True:
            try:
                await self.handle(delivery.result)
                await self._queue.ack(delivery)
                return
            except NotSent as exc:
                delay_s = backoff.next_delay_s()
                log.warning("answer not sent (%s); trying again in %.1fs", exc, delay_s)
            except PalicordError as exc:
                delay_s = backoff.next_delay_s()
                log.warning(
                    "results stream unavailable (%s); retrying in %.1fs", describe(exc), delay_s
                )
            except Exception:  # a bug in one result must not stop the others
                failures += 1
                log.exception("handling result %s failed", delivery.result.job_id)
                if failures >= MAX_HANDLE_ATTEMPTS:
                    return
                delay_s = backoff.next_delay_s()
            await asyncio.sleep(delay_s)

    async def handle(self, result: JobResult) -> None:
        """Record one job's outcome and deliver its request's answer if it was the last."""
        route = self.routes.get(result.context.get(ROUTE_FIELD, ""))
        if route is not None:
            return await route(result)
        try:
            item = ItemContext.from_context(result.context)
        except MalformedMessage as exc:
            log.warning("result %s has no usable reply context: %s", result.job_id, exc)
            return
        with log_ids(job_id=result.job_id, request_id=item.request_id):
            await self._handle(item, result)

    async def _handle(self, item: ItemContext, result: JobResult) -> None:
        if result.queue_wait_s is not None and result.run_s is not None:
            self._recent_waits.append(result.queue_wait_s + result.run_s)
        self._progress.job_done(item.request_id, result.job_id)
        await self._store.remove_user_job(item.address.user_id, result.job_id)
        await self.record(item, result)

    async def record(self, item: ItemContext, result: JobResult) -> None:
        """Store an outcome; the caller that completes the request delivers it. Redis
        errors propagate, so the result stays unacknowledged and is handled again."""
        count = await self._store.record(item.request_id, item.index, result)
        if count >= item.count:
            await self._finish(item)

    async def answer_orphans(self) -> int:
        """Finish the requests an earlier run of this bot acknowledged but died before
        queueing: each image that never reached the queue gets a BotRestarted outcome, so
        the request still ends in one answer. Returns how many requests were orphaned."""
        instance_id = self._queue.instance_id
        orphans = await self._store.orphaned_intakes(instance_id, before=self._started_at)
        for request_id, items in orphans.items():
            decided = set(await self._store.outcomes(request_id))
            for item in items:
                if item.index in decided:
                    continue
                if (await self._queue.status(item.job_id)).state is not JobState.UNKNOWN:
                    continue  # queued before the crash: its worker answers it
                failure = JobResult.failure(item.job_id, item.to_context(), BotRestarted())
                await self.record(item, failure)
            await self._store.end_intake(instance_id, request_id)
        if orphans:
            log.warning("answered %d requests interrupted by a restart", len(orphans))
        return len(orphans)

    async def _finish(self, item: ItemContext) -> None:
        outcomes = await self._store.outcomes(item.request_id)
        answers = [_item_answer(outcomes.get(i)) for i in range(item.count)]
        limit = item.address.upload_limit_bytes
        if any(a.result.ok and a.result.detections for a in answers):
            async with self._drawing:  # the kept pictures are read only while drawing
                answers = [await self._with_picture(a) for a in answers]
                answer = await asyncio.to_thread(compose, answers, max_file_bytes=limit)
        else:
            answer = await asyncio.to_thread(compose, answers, max_file_bytes=limit)
        pictures = [a.result.context.get(PICTURE_FIELD) if a.result.ok else None for a in answers]
        answer = dataclasses.replace(answer, view=follow_up_view(pictures))
        lease = await self._store.lease(item.request_id, SEND_LEASE_S)
        if lease == "delivered":
            return  # answered already (a result read again after a restart or an outage)
        if lease == "busy":
            raise NotSent(f"request {item.request_id} is being sent by another task")
        ok = await self._send(item, answer)
        self._metrics.answers.labels("delivered" if ok else "undeliverable").inc()
        log.info("request %s answered (%s)", item.request_id, "ok" if ok else "undeliverable")
        # Marked only once Discord confirmed: a send that failed in any way raised above,
        # and the request is tried again rather than marked and never answered.
        await self._store.mark_delivered(item.request_id)
        await self._store.forget(item.request_id)

    async def _send(self, item: ItemContext, answer: Answer) -> bool:
        """Send, holding the request's lease (two results completing a request at once
        must not both send); raises NotSent when it did not reach Discord this time."""
        try:
            async with self._progress.finishing(item.request_id):
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel
                # (bot.close) that lands as the send completes, and the loop never stops.
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    return await self._replies.deliver(item.address, answer)
        except Exception as exc:
            with contextlib.suppress(PalicordError):  # else the lease lapses by itself
                await self._store.release(item.request_id)
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc

    async def _with_picture(self, answer: ItemAnswer) -> ItemAnswer:
        """`answer` with the picture kept in Redis when its boxes have nothing else to be
        drawn on (a result without the worker's display copy). A picture gone from Redis
        too (PICTURE_TTL_S, or dropped for space) is not downloaded again: the attachment
        may have been deleted or its link expired by then, the boxes still reach the user
        as JSON with a note (`bot.answer`), and a second download would cost the bandwidth
        and memory that keeping the picture once is there to save."""
        if not answer.needs_picture:
            return answer
        digest = answer.result.context.get(PICTURE_FIELD, "")
        image = await self._memory.picture(digest)
        if image is None:
            log.info("no kept picture to draw %s's boxes on", answer.result.job_id)
            return answer
        return dataclasses.replace(answer, image=image)


def _item_answer(result: JobResult | None) -> ItemAnswer:
    if result is None:  # lost from Redis: say so rather than never answering
        result = JobResult(job_id="lost", context={}, error=PalicordError.code)
    return ItemAnswer(label=result.context.get("label", ""), result=result)
