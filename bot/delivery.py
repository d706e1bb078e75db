"""From complete requests to answers: consume this bot instance's results stream and
deliver each request's one answer.

The queue keeps one record per request (`inference.queue.records`): its items, reply
address and outcomes. Each item gets one outcome (its job's, put there by the script
that settles it, or an answer from the cache or a refusal recorded at intake), and the
last one in puts one entry naming the request on this stream, so requests completed
while the bot was away are answered when it is back. A stream entry is read, the record
composed into one answer, sent, and marked delivered only once Discord confirmed it.
Requests are handled concurrently (up to MAX_HANDLING at once) and answers with pictures
are drawn a few at a time (MAX_DRAWING), so one slow drawing or a slow Discord never
holds up the other answers. Boxes are drawn on the display copy the worker sends with
the result; for a result without one (an older worker), on the picture kept in Redis for
follow-ups (`inference.queue.memory`, by the digest in the result's context), read only
while drawing and reduced to display size before it is drawn on. The bot keeps no
picture in memory between intake and answer and never downloads one again: a picture
gone from Redis too is answered with its boxes as JSON and a note. Requests of other
kinds (automatic alt text) name a route in their record and go to its handler instead. A
result of a version 1 job (queued by the previous release, its reply address in its
context) is first put into a record of its own request (`RequestRecords.adopt`).
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
from bot.replies import Replies, ReplyAddress
from inference.errors import MalformedMessage, PalicordError
from inference.ops import log_ids
from inference.queue import Delivery, JobResult, JobState, QueueClient, RequestRecord
from inference.queue.connection import Backoff, cancel_and_wait, describe
from inference.queue.memory import PICTURE_FIELD

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


class NotSent(Exception):
    """The answer did not reach Discord this time (or another task is sending it): its
    result stays unacknowledged and is handled again."""


class Deliverer:
    """Turns results into answers on Discord."""

    def __init__(
        self,
        *,
        queue: QueueClient,
        replies: Replies,
        progress: ProgressBoard,
        token_ttl_s: float,
        metrics: BotMetrics | None = None,
    ) -> None:
        self._queue = queue
        self._records = queue.records
        self._replies = replies
        self._progress = progress
        self._memory = queue.memory
        self._token_ttl_s = token_ttl_s
        self._metrics = metrics or BotMetrics()
        self._recent_waits: deque[float] = deque(maxlen=RECENT_WAITS)
        self._started_at = time.time()
        self._swept = False
        self._handling: dict[str, asyncio.Task[None]] = {}  # by stream entry id
        self._slots = asyncio.Semaphore(MAX_HANDLING)
        self._drawing = asyncio.Semaphore(MAX_DRAWING)
        self.routes: dict[str, Callable[[RequestRecord], Awaitable[None]]] = {}

    def typical_wait_s(self) -> float | None:
        """Median time from queued to answered over recent jobs, if any."""
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
        """Handle one stream entry and acknowledge it, waiting out Redis outages (handling
        again is safe: only one answer is ever sent)."""
        backoff = Backoff(max_s=RETRY_MAX_S, first_s=RETRY_FIRST_S)
        failures = 0
        while True:
            try:
                await self.handle(delivery)
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
            except Exception:  # a bug in one request must not stop the others
                failures += 1
                log.exception("handling %s failed", delivery.request_id or delivery.entry_id)
                if failures >= MAX_HANDLE_ATTEMPTS:
                    return
                delay_s = backoff.next_delay_s()
            await asyncio.sleep(delay_s)

    async def handle(self, delivery: Delivery) -> None:
        """Answer the request a stream entry names (a version 1 job's result first joins
        its request's record, whose completion brings it here again)."""
        if delivery.job_result is not None:
            if not await self._records.adopt(delivery.job_result):
                log.warning("result %s has no usable reply context", delivery.job_result.job_id)
            return
        assert delivery.request_id is not None
        with log_ids(request_id=delivery.request_id):
            try:
                record = await self._records.read(delivery.request_id)
                if record is None:
                    return  # answered already (an entry read again), or expired
                # Checked before anything is composed: a record nobody can answer.
                address = ReplyAddress.from_fields(record.reply)
            except MalformedMessage as exc:
                log.warning("request %s has a malformed record: %s", delivery.request_id, exc)
                return
            self._note_waits(record)
            route = self.routes.get(record.route) if record.route else None
            if record.route and route is None:
                log.warning("request %s names an unknown route", record.request_id)
            elif route is not None:
                await route(record)
            else:
                await self._finish(record, address)

    def _note_waits(self, record: RequestRecord) -> None:
        for result in record.outcomes.values():
            if result.queue_wait_s is not None and result.run_s is not None and result.run_s > 0:
                self._recent_waits.append(result.queue_wait_s + result.run_s)

    async def answer_orphans(self) -> int:
        """Finish the requests an earlier run of this bot acknowledged but died before
        queueing (the previous release's too): each item that never reached the queue gets
        a BotRestarted outcome, so the request still ends in one answer. Returns how many
        requests were orphaned."""
        orphans = await self._records.v1_intakes()
        orphans += await self._records.orphaned(
            before=self._started_at, max_age_s=self._token_ttl_s
        )
        for record in orphans:
            for index in range(record.count):
                if index in record.outcomes:
                    continue
                job_id = record.job_id(index)
                if (await self._queue.status(job_id)).state is not JobState.UNKNOWN:
                    continue  # queued before the crash: its worker answers it
                failure = JobResult.failure(job_id, {}, BotRestarted())
                await self._records.record(record.request_id, index, failure)
            await self._records.close(record.request_id)
        if orphans:
            log.warning("answered %d requests interrupted by a restart", len(orphans))
        return len(orphans)

    async def _finish(self, record: RequestRecord, address: ReplyAddress) -> None:
        answers = [_item_answer(record, i) for i in range(record.count)]
        limit = address.upload_limit_bytes
        if any(a.result.ok and a.result.detections for a in answers):
            async with self._drawing:  # the kept pictures are read only while drawing
                answers = [await self._with_picture(a) for a in answers]
                answer = await asyncio.to_thread(compose, answers, max_file_bytes=limit)
        else:
            answer = await asyncio.to_thread(compose, answers, max_file_bytes=limit)
        pictures = [a.result.context.get(PICTURE_FIELD) if a.result.ok else None for a in answers]
        answer = dataclasses.replace(answer, view=follow_up_view(pictures))
        lease = await self._records.lease(record.request_id, SEND_LEASE_S)
        if lease == "delivered":
            return  # answered already (a request read again after a restart or an outage)
        if lease == "busy":
            raise NotSent(f"request {record.request_id} is being sent by another task")
        ok = await self._send(record.request_id, address, answer)
        self._metrics.answers.labels("delivered" if ok else "undeliverable").inc()
        log.info("request %s answered (%s)", record.request_id, "ok" if ok else "undeliverable")
        # Marked only once Discord confirmed: a send that failed in any way raised above,
        # and the request is tried again rather than marked and never answered.
        await self._records.mark_delivered(record)
        await self._records.remove_user_jobs(
            address.user_id, *(record.job_id(i) for i in range(record.count))
        )

    async def _send(self, request_id: str, address: ReplyAddress, answer: Answer) -> bool:
        """Send, holding the request's lease (two tasks handling a request at once must
        not both send); raises NotSent when it did not reach Discord this time."""
        try:
            async with self._progress.finishing(request_id):
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel
                # (bot.close) that lands as the send completes, and the loop never stops.
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    return await self._replies.deliver(address, answer)
        except Exception as exc:
            with contextlib.suppress(PalicordError):  # else the lease lapses by itself
                await self._records.release(request_id)
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


def _item_answer(record: RequestRecord, index: int) -> ItemAnswer:
    result = record.outcomes.get(index)
    if result is None:  # lost from Redis: say so rather than never answering
        result = JobResult(job_id=record.job_id(index), context={}, error=PalicordError.code)
    return ItemAnswer(label=record.labels[index], result=result)
