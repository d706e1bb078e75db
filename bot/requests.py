"""From a Discord event to queued jobs: every request (slash command, context menu or
mention) takes the same path, top to bottom in this module.

1. `admit`: cheap refusals before anything slow (channel allowed, images present,
   cooldown; a single image's host and declared size), within Discord's 3 s window.
2. `spec`: the task, validated, in the user's language.
3. Acknowledge: an interaction is deferred ("thinking"), a mention gets a reply; `open`
   creates the request's one record in the queue (`inference.queue.records`: its items
   and reply address), listed as opening until `close`, in case the bot dies in between.
4. `submit`: each image is downloaded with a cap and checked with the engine's own intake
   code, the guild's daily quota is charged, each picture is kept once (by digest) and
   the good ones are queued as jobs of the request; an answer from the cache, or a refusal
   of one image, is recorded as that item's outcome. The request's answer is delivered
   when its last outcome is in (`bot.delivery`).
Refusals reach the user privately (interactions) or as a reply (mentions). The Discord
side of each step (deferring, replying, error messages) is in `bot.events`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.answer import FRAME_FIELD
from bot.cancel import cancel_view
from bot.download import Downloader, ImageRef
from bot.errors import ChannelNotAllowed, NoImageFound, TooLateToCancel
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.limits import Charge, Limits
from bot.metrics import BotMetrics
from bot.progress import ProgressBoard, progress_text
from bot.replies import ReplyAddress
from bot.settings import BotSettings
from inference.errors import (
    PalicordError,
    PictureExpired,
    QueueBusy,
    QueueUnavailable,
    UnsupportedLanguage,
)
from inference.intake import ImageInfo, probe_image
from inference.queue import (
    DM_GUILD,
    JobResult,
    JobStatus,
    QueueClient,
    RequestRecord,
)
from inference.queue.memory import PICTURE_FIELD, from_cache, origin_of
from inference.tasks import DEFAULT_LANGUAGE, Task, TaskSpec, normalize_language

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)

# Discord forgets an interaction not acknowledged within 3 s. The checks before the
# acknowledgement read Redis; one that accepts connections but does not answer must not
# eat that window, or the user sees only "The application did not respond".
ADMIT_BUDGET_S = 2.0


# --- what was asked, by whom -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ask:
    """What the user asked for, before validation."""

    task: Task
    language: str | None = None  # an explicit choice; otherwise locale and guild decide
    question: str | None = None
    objects: str | None = None


def choose_language(explicit: str | None, *candidates: str | None) -> str:
    """An explicit choice (validated strictly), else the first supported candidate, else en."""
    if explicit:
        return normalize_language(explicit)
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return normalize_language(candidate)
        except UnsupportedLanguage:
            continue
    return DEFAULT_LANGUAGE


@dataclass(frozen=True, slots=True)
class Picture:
    """A picture downloaded (or kept) and probed, ready to queue."""

    data: bytes
    info: ImageInfo


def _job_context(digest: str, info: ImageInfo) -> dict[str, str]:
    """What comes back with the item's result: the picture's digest (its follow-up
    buttons) and, for an animation, the frame the worker reads (the same
    `representative_frame` rule on the same structure), which the answer names."""
    context = {PICTURE_FIELD: digest}
    if info.frames > 1:
        context[FRAME_FIELD] = f"{info.shown_frame}/{info.frames}"
    return context


# --- the path of one request ------------------------------------------------------------


class Requests:
    """Validates, downloads, queues and starts progress for one request at a time."""

    def __init__(
        self,
        *,
        settings: BotSettings,
        queue: QueueClient,
        downloader: Downloader,
        limits: Limits,
        configs: GuildConfigStore,
        progress: ProgressBoard,
        metrics: BotMetrics,
    ) -> None:
        self._memory = queue.memory
        self._records = queue.records
        self._metrics = metrics
        self._settings = settings
        self._queue = queue
        self._downloader = downloader
        self._limits = limits
        self._configs = configs
        self._progress = progress

    def count(self, kind: str, failure: BaseException | None = None) -> None:
        """One request of `kind` ended: queued, refused (a PalicordError) or an error."""
        # An outage or a bug is ours, not a refusal of the user's request.
        ours = isinstance(failure, QueueUnavailable) or not isinstance(failure, PalicordError)
        outcome = "queued" if failure is None else "error" if ours else "refused"
        if isinstance(failure, QueueBusy):
            outcome = "busy"  # full for a moment: a capacity signal, not a fault
        self._metrics.requests.labels(kind, outcome).inc()

    def acknowledged(self, interaction: discord.Interaction[PalicordBot]) -> None:
        delay_s = time.time() - interaction.created_at.timestamp()
        self._metrics.ack.observe(max(0.0, delay_s))

    async def admit(
        self, asked: ReplyAddress, refs: Sequence[ImageRef]
    ) -> tuple[GuildConfig, list[ImageRef]]:
        """Checks worth doing before acknowledging: channel, images present, cooldown.
        A single image is also checked for host and declared size, so that a refusal can
        still be a private reply."""
        config = await self._configs.get(asked.guild_id)
        if not config.allows_channel(asked.channel_id, asked.parent_channel_id):
            raise ChannelNotAllowed()
        images = list(refs)[: self._settings.max_images_per_message]
        if not images:
            raise NoImageFound()
        if len(images) == 1:
            self._downloader.check(images[0])
        await self._limits.start_cooldown(asked.user_id)
        return config, images

    def spec(
        self,
        ask: Ask,
        *,
        config: GuildConfig,
        locale: str | None = None,
        guild_locale: str | None = None,
    ) -> TaskSpec:
        """Validate the ask; language: explicit, else the user's locale, else the guild's
        setting, else the guild's locale, else English."""
        language = choose_language(ask.language, locale, config.language, guild_locale)
        return TaskSpec.build(
            ask.task, language=language, question=ask.question, objects=ask.objects
        )

    async def _intake(self, ref: ImageRef) -> Picture:
        if ref.stored is not None:  # a follow-up: the picture was checked when first queued
            kept = await self._memory.picture(ref.stored)
            if kept is None:
                raise PictureExpired()
            data = kept
        else:
            data = await self._downloader.fetch(ref)
        # Header parsing is quick, but a hostile file should not stall the event loop. A
        # kept picture is probed again for its frames, which the answer names.
        info = await asyncio.to_thread(
            probe_image,
            data,
            max_bytes=self._settings.max_image_bytes,
            max_pixels=self._settings.max_image_pixels,
        )
        return Picture(data, info)

    async def _intake_all(self, refs: Sequence[ImageRef]) -> list[Picture | PalicordError]:
        out: list[Picture | PalicordError] = []
        for got in await asyncio.gather(*(self._intake(r) for r in refs), return_exceptions=True):
            if isinstance(got, Picture | PalicordError):
                out.append(got)
            elif isinstance(got, Exception):
                log.exception("image intake failed unexpectedly", exc_info=got)
                out.append(PalicordError())
            else:
                raise got
        return out

    async def open(self, refs: Sequence[ImageRef], address: ReplyAddress) -> RequestRecord:
        """A new, acknowledged request: its record in the queue, listed as opening until
        `close`: should this bot die before every image is queued, its next run tells the
        user (see `Deliverer.answer_orphans`)."""
        record = self._records.new(
            uuid.uuid4().hex, [r.filename for r in refs], address.to_fields()
        )
        await self._records.open(record)
        return record

    async def close(self, record: RequestRecord, *, refused: bool = False) -> None:
        """Every image is queued or has its outcome; or (`refused`) the user has been told
        why the request failed, and its record goes."""
        try:
            if refused:
                await self._records.drop(record.request_id)
            else:
                await self._records.close(record.request_id)
        except QueueUnavailable:
            # The listing lapses with the interaction token; a restart before then would
            # tell this user once more that the request was interrupted.
            log.warning("could not close the intake of request %s", record.request_id)

    async def submit(
        self,
        refs: Sequence[ImageRef],
        record: RequestRecord,
        spec: TaskSpec,
        config: GuildConfig,
    ) -> None:
        """Download, check and queue every image, then show the place in line. Raises the
        first error when no image at all could be queued or answered; otherwise
        per-image errors become part of the answer."""
        request_id = record.request_id
        who = ReplyAddress.from_fields(record.reply)
        intake = await self._intake_all(refs)
        good = [i for i, got in enumerate(intake) if isinstance(got, Picture)]
        if not good:
            raise next(e for e in intake if isinstance(e, PalicordError))
        models = await self._serving_models(spec)  # that may answer from the cache
        quota = config.quota(self._settings.guild_daily_quota)
        charge = await self._limits.charge(
            who.guild_id,
            len(good),
            quota=quota,
            user_id=who.user_id,
            user_quota=self._settings.user_daily_quota,
        )
        failures: dict[int, PalicordError] = {
            i: e for i, e in enumerate(intake) if isinstance(e, PalicordError)
        }
        cancel = cancel_view(request_id, who.user_id, record.count, charge.day)
        self._progress.track(request_id, who, [], shown="", buttons=cancel)
        submitted: list[JobStatus] = []
        cached: dict[int, JobResult] = {}
        for i in good:
            picture = intake[i]
            assert isinstance(picture, Picture)
            try:
                digest = await self._memory.keep_picture(picture.data)
                context = _job_context(digest, picture.info)
                hit = await self._cached(spec, record, i, context, models)
                if hit is not None:
                    cached[i] = hit
                    continue
                submitted.append(
                    await self._queue_one(
                        who=who, spec=spec, record=record, index=i, picture=picture, context=context
                    )
                )
            except PalicordError as exc:
                failures[i] = exc
        # Answers from the cache took no GPU time: only queued images count for the day.
        await self._limits.refund(charge, len(good) - len(submitted))
        if not submitted and not cached:
            self._progress.drop(request_id)
            raise failures[good[0]]
        # Now an answer is certain: the refusals and the cache's answers are its outcomes
        # (the last outcome in, these or a job's, brings the request to the bot's stream).
        for i, refusal in failures.items():
            result = JobResult.failure(record.job_id(i), {}, refusal, task=spec.task)
            await self._records.record(request_id, i, result)
        for i, hit in cached.items():
            await self._records.record(request_id, i, hit)
        if submitted:
            await self._progress.show_now(request_id, progress_text(submitted))
        else:
            self._progress.drop(request_id)

    async def cancel(
        self,
        interaction: discord.Interaction[PalicordBot],
        request_id: str,
        count: int,
        charge: Charge,
    ) -> None:
        """The requester pressed Cancel: every job of the request still in line or running
        is dropped (the queue keeps a running one's result from ever being published) and
        so is the request's record, so it is never answered; those images go back to the
        day's quotas."""
        job_ids = [f"{request_id}-{i}" for i in range(count)]
        cancelled = [j for j in job_ids if await self._queue.cancel(j)]
        if not cancelled:
            raise TooLateToCancel()
        await self._records.drop(request_id)
        await self._limits.refund(charge, len(cancelled))
        await self._records.remove_user_jobs(interaction.user.id, *cancelled)
        async with self._progress.finishing(request_id):  # no progress edit after this
            await interaction.response.edit_message(content="✖️ Cancelled.", view=None)
        log.info("request %s cancelled (%d jobs)", request_id, len(cancelled))

    async def _serving_models(self, spec: TaskSpec) -> set[str]:
        """The models online now that can do `spec`'s task (none when not caching)."""
        if not self._memory.caching:
            return set()
        task = spec.task.value
        return {w.model_id for w in await self._queue.workers() if task in w.capabilities}

    async def _cached(
        self,
        spec: TaskSpec,
        record: RequestRecord,
        index: int,
        context: dict[str, str],
        models: set[str],
    ) -> JobResult | None:
        """This exact request answered before by a model that is online now, if kept."""
        hit = await self._memory.cached_answer(context[PICTURE_FIELD], spec, models)
        if hit is None:
            return None
        self._metrics.cache_hits.inc()
        address = ReplyAddress.from_fields(record.reply)
        guild = DM_GUILD if address.guild_id is None else str(address.guild_id)
        origin = origin_of(guild, str(address.user_id))
        return from_cache(hit, job_id=record.job_id(index), context=context, origin=origin)

    async def _queue_one(
        self,
        *,
        who: ReplyAddress,
        spec: TaskSpec,
        record: RequestRecord,
        index: int,
        picture: Picture,
        context: dict[str, str],
    ) -> JobStatus:
        job = self._queue.new_job(
            spec,
            guild_id=who.guild_id,
            user_id=who.user_id,
            channel_id=who.channel_id,
            context=context,
            job_id=record.job_id(index),
            picture=context[PICTURE_FIELD],
            request=(record.request_id, index),
        )
        # Listed before submitting: a fast worker's result may arrive before submit returns.
        await self._records.add_user_job(who.user_id, job.job_id, job.deadline_at)
        try:
            # The bytes only in case the kept picture was dropped for space meanwhile.
            submitted = await self._queue.submit(job, picture.data)
        except PalicordError:
            await self._records.remove_user_jobs(who.user_id, job.job_id)
            raise
        self._progress.add_job(record.request_id, job.job_id)
        return submitted
