"""Where an answer goes and how it gets there: the reply address each job carries, the
progress message kept current while a request waits, and the final answer put in its place.

Answers to slash commands and context menus edit the interaction's original response
through its webhook; once the token is too old (Discord keeps it 15 minutes) or refused,
the answer is posted in the channel instead, mentioning the user so it is not lost.
Mentions are answered by editing the bot's reply message. The address travels inside
each job's context, so any bot run, even one started after the job was queued, can
deliver it.

Progress edits are the scarce resource (Discord rate-limits them per token and per
channel), so a message is edited only when its text changed, and at most once per
`interval_s`. The final answer takes the request's lock, so a late progress edit can
never land on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import discord
from discord.utils import MISSING

from bot.answer import Answer
from inference.annotate import DISCORD_UPLOAD_LIMIT_BYTES
from inference.errors import MalformedMessage, PalicordError
from inference.queue import JobState, JobStatus, QueueClient

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)

# The queue caps each context item at 512 characters (key + value).
_MAX_LABEL_CHARS = 100
_MAX_URL_CHARS = 480
# Discord error codes meaning "this webhook/message is gone": fall back to the channel.
_GONE_CODES = frozenset({10008, 10015, 10062, 50027})
# Most requests this bot run shows progress for at once. Each holds a Discord message and
# a few job ids; past this the oldest stops updating (its answer still comes).
MAX_TRACKED_REQUESTS = 10_000


# --- the address ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """The bot's progress message for a request and how to reach it again."""

    channel_id: int
    user_id: int
    guild_id: int | None
    message_id: int | None  # the message that shows progress and then the answer
    app_id: int | None = None  # interaction webhook: application id + token
    token: str | None = None
    issued_at: float = 0.0  # epoch seconds the interaction token was issued
    reply_to_id: int | None = None  # the user's message, for a mention
    # Largest file the answer may attach there: boosted guilds allow more than the default.
    upload_limit_bytes: int = DISCORD_UPLOAD_LIMIT_BYTES

    @property
    def is_interaction(self) -> bool:
        return self.app_id is not None and self.token is not None


@dataclass(frozen=True, slots=True)
class ItemContext:
    """One image of one request: which, of how many, and where the request's answer goes."""

    request_id: str
    index: int
    count: int
    label: str
    image_url: str
    address: ReplyAddress

    @property
    def job_id(self) -> str:
        """The id of this image's job: known in advance, so that a bot restarted mid-way
        can ask the queue which images of a request it had already queued."""
        return f"{self.request_id}-{self.index}"

    def to_context(self) -> dict[str, str]:
        a = self.address
        out = {
            "rid": self.request_id,
            "i": str(self.index),
            "n": str(self.count),
            "label": self.label[:_MAX_LABEL_CHARS],
            "url": self.image_url if len(self.image_url) <= _MAX_URL_CHARS else "",
            "ch": str(a.channel_id),
            "u": str(a.user_id),
            "ul": str(a.upload_limit_bytes),
        }
        optional = {
            "g": a.guild_id,
            "mid": a.message_id,
            "app": a.app_id,
            "tok": a.token,
            "at": a.issued_at if a.is_interaction else None,
            "ref": a.reply_to_id,
        }
        out.update({k: str(v) for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_context(cls, ctx: dict[str, str]) -> ItemContext:
        """Inverse of `to_context`; raises MalformedMessage on anything else."""

        def opt_int(key: str) -> int | None:
            return int(ctx[key]) if ctx.get(key) else None

        try:
            address = ReplyAddress(
                channel_id=int(ctx["ch"]),
                user_id=int(ctx["u"]),
                guild_id=opt_int("g"),
                message_id=opt_int("mid"),
                app_id=opt_int("app"),
                token=ctx.get("tok") or None,
                issued_at=float(ctx.get("at") or 0.0),
                reply_to_id=opt_int("ref"),
                upload_limit_bytes=opt_int("ul") or DISCORD_UPLOAD_LIMIT_BYTES,
            )
            item = cls(
                request_id=ctx["rid"],
                index=int(ctx["i"]),
                count=int(ctx["n"]),
                label=ctx.get("label", ""),
                image_url=ctx.get("url", ""),
                address=address,
            )
        except (KeyError, ValueError) as exc:
            raise MalformedMessage("A job's reply context is incomplete.") from exc
        if not 0 <= item.index < item.count:
            raise MalformedMessage("A job's reply context has a bad item index.")
        return item


def interaction_address(
    interaction: discord.Interaction[PalicordBot], message_id: int | None
) -> ReplyAddress:
    """Where an interaction's answer goes: its original response, via its token."""
    assert interaction.channel_id is not None
    return ReplyAddress(
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        message_id=message_id,
        app_id=interaction.application_id,
        token=interaction.token,
        issued_at=interaction.created_at.timestamp() if interaction.created_at else time.time(),
        upload_limit_bytes=interaction.filesize_limit,
    )


# --- posting and editing ---------------------------------------------------------------


def _gone(exc: discord.HTTPException) -> bool:
    return exc.status in (401, 404) or exc.code in _GONE_CODES


class Replies:
    """Edits progress messages and delivers final answers."""

    def __init__(self, client: discord.Client, *, token_ttl_s: float) -> None:
        self._client = client
        self._token_ttl_s = token_ttl_s

    def _token_fresh(self, address: ReplyAddress) -> bool:
        return address.is_interaction and time.time() - address.issued_at < self._token_ttl_s

    def _webhook(self, address: ReplyAddress) -> discord.Webhook:
        assert address.app_id is not None and address.token is not None
        return discord.Webhook.partial(address.app_id, address.token, client=self._client)

    async def _edit(
        self, address: ReplyAddress, *, content: str | None, answer: Answer | None = None
    ) -> None:
        embeds = list(answer.embeds) if answer else []
        files = answer.discord_files() if answer else []
        # Only the final answer carries buttons; a progress edit leaves components alone.
        view = answer.view if answer is not None and answer.view is not None else MISSING
        message_id = address.message_id
        if message_id is None:
            raise ValueError("this address has no message to edit")
        if address.is_interaction:
            await self._webhook(address).edit_message(
                message_id,
                content=content,
                embeds=embeds,
                attachments=files,
                allowed_mentions=discord.AllowedMentions.none(),
                view=view,
            )
            return
        channel = self._client.get_partial_messageable(
            address.channel_id, guild_id=address.guild_id
        )
        await channel.get_partial_message(message_id).edit(
            content=content,
            embeds=embeds,
            attachments=files,
            allowed_mentions=discord.AllowedMentions.none(),
            view=view,
        )

    async def show_progress(self, address: ReplyAddress, text: str) -> bool:
        """Replace the progress message's text; False if Discord refused (never raises)."""
        if address.message_id is None:
            return False
        if address.is_interaction and not self._token_fresh(address):
            return False
        try:
            await self._edit(address, content=text)
        except discord.HTTPException as exc:
            log.info("progress edit refused: HTTP %s code %s", exc.status, exc.code)
            return False
        return True

    async def deliver(self, address: ReplyAddress, answer: Answer) -> bool:
        """Put `answer` in place of the progress message, else post it in the channel. True
        once Discord confirmed it, False when Discord refused it for good (the channel is
        closed to the bot); any other failure (a connection error, a timeout, Discord's
        5xx) raises, to be tried again. Trying again never shows a second answer: an edit
        is idempotent, and a channel post carries a nonce Discord enforces."""
        if address.message_id is not None and (
            self._token_fresh(address) or not address.is_interaction
        ):
            try:
                await self._edit(address, content=answer.content or None, answer=answer)
                return True
            except discord.HTTPException as exc:
                if not _gone(exc) and exc.status < 500:
                    log.warning("answer edit refused: HTTP %s code %s", exc.status, exc.code)
                log.info("answer edit failed (HTTP %s); posting in the channel", exc.status)
        return await self._post_in_channel(address, answer)

    async def _post_in_channel(self, address: ReplyAddress, answer: Answer) -> bool:
        channel = self._client.get_partial_messageable(
            address.channel_id, guild_id=address.guild_id
        )
        reference = None
        if address.reply_to_id is not None:
            reference = discord.MessageReference(
                message_id=address.reply_to_id,
                channel_id=address.channel_id,
                fail_if_not_exists=False,
            )
        # The one ping this bot ever makes: the person whose answer this is.
        content = f"<@{address.user_id}> here is your answer."
        if answer.content:
            content += "\n" + answer.content
        try:
            await channel.send(
                content=content,
                embeds=list(answer.embeds),
                files=answer.discord_files(),
                reference=reference,  # type: ignore[arg-type]
                allowed_mentions=discord.AllowedMentions(
                    everyone=False, roles=False, users=[discord.Object(address.user_id)]
                ),
                view=answer.view if answer.view is not None else MISSING,
                # One progress message per request: its id names this answer, so a post
                # repeated after a lost confirmation is the same message (enforce_nonce).
                nonce=address.message_id or secrets.randbits(63),
            )
        except discord.HTTPException as exc:
            if exc.status >= 500:
                raise  # Discord's trouble, not a refusal: try again later
            log.warning("could not post an answer in the channel: HTTP %s", exc.status)
            return False
        return True


# --- progress while a request waits ------------------------------------------------------


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

    def track(self, request_id: str, address: ReplyAddress, job_ids: list[str], shown: str) -> None:
        """Start refreshing `address` for these jobs; `shown` is what it says right now."""
        while len(self._tracked) >= self._max_tracked:
            oldest = next(iter(self._tracked))
            log.warning("tracking too many requests; %s stops showing progress", oldest)
            del self._tracked[oldest]
        self._tracked[request_id] = _Tracked(address, list(job_ids), shown, time.monotonic())

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
            await self._replies.show_progress(tracked.address, text)

    def job_done(self, request_id: str, job_id: str) -> None:
        tracked = self._tracked.get(request_id)
        if tracked is not None and job_id in tracked.waiting:
            tracked.waiting.remove(job_id)

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
        statuses = [await self._queue.status(job_id) for job_id in list(tracked.waiting)]
        text = progress_text(statuses)
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
