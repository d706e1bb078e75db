"""The progress message kept current while a request waits ("⏳ In line: #3", with its
Cancel button), until its answer takes its place.

Progress edits are the scarce resource (Discord rate-limits them per token and per
channel), so a message is edited only when its text changed, and at most once per
`interval_s`. The final answer takes the request's lock, so a late progress edit can
never land on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import discord

from bot.replies import Replies, ReplyAddress
from inference.errors import PalicordError
from inference.queue import JobState, JobStatus, QueueClient

log = logging.getLogger(__name__)

# Most requests this bot run shows progress for at once. Each holds a Discord message and
# a few job ids; past this the oldest stops updating (its answer still comes).
MAX_TRACKED_REQUESTS = 10_000
_WAITING = (JobState.QUEUED, JobState.RUNNING)


def progress_text(statuses: Sequence[JobStatus]) -> str:
    """The waiting line for a request whose unfinished jobs have these statuses."""
    queued = sorted(
        (s for s in statuses if s.state is JobState.QUEUED and s.place > 0), key=lambda s: s.place
    )
    places = [f"#{s.place}" if s.exact else f"about #{s.place}" for s in queued]
    running = sum(1 for s in statuses if s.state is JobState.RUNNING)
    if len(statuses) <= 1:
        return f"⏳ In line: {places[0]}" if places else "⚙️ Working on it…"
    parts = [f"⏳ {len(statuses)} images to go"]
    if running:
        parts.append(f"{running} in progress")
    if places:
        parts.append(f"next in line: {places[0]}")
    return " · ".join(parts)


@dataclass
class _Tracked:
    address: ReplyAddress
    waiting: list[str]  # job ids without a result yet
    shown: str
    shown_at: float
    buttons: discord.ui.View | None = None  # the Cancel button (bot.cancel)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: bool = False


class ProgressBoard:
    """Requests this bot run is showing progress for."""

    def __init__(
        self,
        queue: QueueClient,
        replies: Replies,
        *,
        interval_s: float,
        poll_s: float = 1.0,
        max_tracked: int = MAX_TRACKED_REQUESTS,
    ) -> None:
        self._queue = queue
        self._replies = replies
        self._interval_s = interval_s
        self._poll_s = min(poll_s, interval_s)
        self._max_tracked = max_tracked
        self._tracked: dict[str, _Tracked] = {}  # insertion order: oldest first

    def track(
        self,
        request_id: str,
        address: ReplyAddress,
        job_ids: list[str],
        shown: str,
        buttons: discord.ui.View | None = None,
    ) -> None:
        """Start refreshing `address` for these jobs; `shown` is what it says right now,
        `buttons` what it offers while the request waits."""
        while len(self._tracked) >= self._max_tracked:
            oldest = next(iter(self._tracked))
            log.warning("tracking too many requests; %s stops showing progress", oldest)
            del self._tracked[oldest]
        self._tracked[request_id] = _Tracked(
            address, list(job_ids), shown, time.monotonic(), buttons
        )

    def add_job(self, request_id: str, job_id: str) -> None:
        tracked = self._tracked.get(request_id)
        if tracked is not None:
            tracked.waiting.append(job_id)

    def drop(self, request_id: str) -> None:
        self._tracked.pop(request_id, None)

    async def show_now(self, request_id: str, text: str) -> None:
        """Show `text` right away (the first place in line), unless already answered."""
        tracked = self._tracked.get(request_id)
        if tracked is not None:
            await self._show(tracked, text)

    async def _show(self, tracked: _Tracked, text: str) -> None:
        # Under the request's lock: once its answer is in, no progress edit may follow.
        async with tracked.lock:
            if tracked.finished:
                return
            tracked.shown, tracked.shown_at = text, time.monotonic()
            await self._replies.show_progress(tracked.address, text, tracked.buttons)

    @contextlib.asynccontextmanager
    async def finishing(self, request_id: str) -> AsyncIterator[None]:
        """Stop progress for a request; deliver its answer inside this block."""
        tracked = self._tracked.pop(request_id, None)
        if tracked is None:
            yield
            return
        async with tracked.lock:
            tracked.finished = True
            yield

    async def refresh(self, request_id: str) -> None:
        """Edit one request's message if its text changed and the interval has passed."""
        tracked = self._tracked.get(request_id)
        if tracked is None or not tracked.waiting:
            return
        if time.monotonic() - tracked.shown_at < self._interval_s:
            return
        ids = list(tracked.waiting)
        statuses = [await self._queue.status(job_id) for job_id in ids]
        # A job whose outcome is in (its request answers when the last one is) no longer
        # waits: it leaves the count.
        done = {j for j, st in zip(ids, statuses, strict=True) if st.state not in _WAITING}
        tracked.waiting = [j for j in tracked.waiting if j not in done]
        waiting = [st for st in statuses if st.state in _WAITING]
        if not waiting:
            return
        text = progress_text(waiting)
        if text != tracked.shown:
            await self._show(tracked, text)

    async def run(self) -> None:
        """Refresh every tracked request, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(self._poll_s)
            for request_id in list(self._tracked):
                try:
                    await self.refresh(request_id)
                except PalicordError as exc:  # Redis away: try again next round
                    log.info("progress refresh skipped: %s", exc.code)
                except Exception:
                    log.exception("progress refresh failed")
