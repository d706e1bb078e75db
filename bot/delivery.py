"""Consume this bot instance's results stream and deliver each request's one answer.

A request of N images is answered once all N have an outcome (a result, or an error
recorded when it could not be queued). Outcomes are collected in Redis, so results that
arrive after a restart still complete their request.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import deque

from bot.address import ItemContext
from bot.answer import Annotator, ItemAnswer, compose
from bot.download import Downloader, ImageRef
from bot.image_cache import ImageCache
from bot.ports import JobQueue
from bot.progress import ProgressBoard
from bot.request_store import RequestStore
from bot.sender import Sender
from inference.errors import MalformedMessage, PalicordError
from inference.jobs import JobResult

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 15.0
DELIVERY_TIMEOUT_S = 60.0
RECENT_WAITS = 200


class Deliverer:
    """Turns results into answers on Discord."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        store: RequestStore,
        sender: Sender,
        progress: ProgressBoard,
        images: ImageCache,
        downloader: Downloader,
        annotator: Annotator,
    ) -> None:
        self._queue = queue
        self._store = store
        self._sender = sender
        self._progress = progress
        self._images = images
        self._downloader = downloader
        self._annotator = annotator
        self._recent_waits: deque[float] = deque(maxlen=RECENT_WAITS)
        self.delivered = 0

    def typical_wait_s(self) -> float | None:
        """Median time from queued to answered over recent results, if any."""
        return statistics.median(self._recent_waits) if self._recent_waits else None

    async def run(self) -> None:
        """Read results forever, riding out Redis outages (cancel to stop)."""
        delay = RETRY_MIN_S
        while True:
            try:
                async for delivery in self._queue.results():
                    delay = RETRY_MIN_S
                    await self.handle(delivery.result)
                    await self._queue.ack(delivery)
            except PalicordError as exc:
                log.warning("results stream unavailable (%s); retrying in %.1fs", exc.code, delay)
            except Exception:  # a bug in one result must not stop all deliveries
                log.exception("results loop failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def handle(self, result: JobResult) -> None:
        """Record one job's outcome and deliver its request's answer if it was the last."""
        try:
            item = ItemContext.from_context(result.context)
        except MalformedMessage as exc:
            log.warning("result %s has no usable reply context: %s", result.job_id, exc)
            return
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

    async def _finish(self, item: ItemContext) -> None:
        outcomes = await self._store.outcomes(item.request_id)
        answers = await asyncio.gather(
            *(self._item_answer(item.request_id, i, outcomes.get(i)) for i in range(item.count))
        )
        answer = await asyncio.to_thread(
            compose,
            answers,
            annotator=self._annotator,
            max_file_bytes=item.address.upload_limit_bytes,
        )
        # Claimed only with the answer ready: whatever fails before this (Redis, drawing)
        # leaves the request to the next try, instead of claimed and never answered.
        if not await self._store.claim(item.request_id):
            return  # answered already (a result read again after a restart or an outage)
        async with self._progress.finishing(item.request_id):
            # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel (bot.close)
            # that lands as the send completes, and the results loop would never stop.
            try:
                async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                    ok = await self._sender.deliver(item.address, answer)
            except TimeoutError:
                ok = False
        self.delivered += 1
        log.info("request %s answered (%s)", item.request_id, "ok" if ok else "undeliverable")
        await self._store.forget(item.request_id)

    async def _item_answer(
        self, request_id: str, index: int, result: JobResult | None
    ) -> ItemAnswer:
        if result is None:  # lost from Redis: say so rather than never answering
            result = JobResult(job_id="lost", context={}, error="internal")
        label = result.context.get("label", "")
        image = self._images.pop(request_id, index)
        if image is None and result.ok and result.detections:
            image = await self._refetch(result.context.get("url", ""), label)
        return ItemAnswer(label=label, result=result, image=image)

    async def _refetch(self, url: str, label: str) -> bytes | None:
        if not url:
            return None
        try:
            return await self._downloader.fetch(ImageRef(url=url, filename=label))
        except PalicordError as exc:
            log.info("could not fetch an image again for its boxes: %s", exc.code)
            return None
