"""Automatic alt text (see `bot.alt_text` for what qualifies and how the reply reads): the
messages of alt-text channels queued as background work, their results posted as one
reply, the reply cleaned up with its original, `/alttext`, and the reply's buttons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.alt_text import (
    OPT_OUT_NOTICE,
    ROUTE,
    AltTextStore,
    Posted,
    compose_reply,
    described_from,
    gone_marker,
    looks_like_text,
    repost_refusal,
    wanting_alt_text,
)
from bot.alt_text_repost import TOO_LARGE, AltTextButton, alt_text_view
from bot.delivery import SEND_LEASE_S, NotSent
from bot.download import ImageRef
from bot.guild_config import GuildConfig
from bot.requests import choose_language
from inference.errors import PalicordError
from inference.intake import probe_image
from inference.queue import JobResult, RequestRecord
from inference.queue.memory import PICTURE_FIELD, from_cache, origin_of
from inference.tasks import Task, TaskSpec

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)


class AltText(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot
        self.store = AltTextStore(bot.redis, bot.queue.keys)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(AltTextButton)
        self.bot.deliverer.routes[ROUTE] = self.handle

    async def cog_unload(self) -> None:
        self.bot.deliverer.routes.pop(ROUTE, None)

    # --- a message posted in an alt-text channel --------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        s = self.bot.settings
        if not s.message_content_intent or message.guild is None:
            return
        me = self.bot.user
        if me is not None and any(u.id == me.id for u in message.mentions):
            return  # a request like anywhere else (the mentions cog), not also described
        if not wanting_alt_text(message, s.max_images_per_message):
            return
        try:
            config = await self.bot.configs.get(message.guild.id)
            if config.describes_channel(message.channel.id):
                await self.consider(message, config)
        except PalicordError as exc:
            log.warning("alt text for message %s skipped: %s", message.id, exc.code)

    async def consider(self, message: discord.Message, config: GuildConfig) -> None:
        """Queue the descriptions of a message's pictures, within the person's choice, the
        channel's hourly cap and the server's daily quota; silent when any says no."""
        s, bot = self.bot.settings, self.bot
        guild = message.guild
        assert guild is not None
        pictures = wanting_alt_text(message, s.max_images_per_message)
        if await self.store.opted_out(message.author.id):
            return
        cap = s.alt_text_per_channel_per_hour
        fit = await self.store.take_hourly(message.channel.id, len(pictures), cap)
        if fit < len(pictures):
            log.info("channel %s is at its alt-text cap for this hour", message.channel.id)
        pictures = pictures[:fit]
        fetched = await asyncio.gather(
            *(bot.downloader.fetch(ImageRef.from_attachment(a)) for a in pictures),
            return_exceptions=True,
        )
        datas = [d for d in fetched if isinstance(d, bytes) and await self._safe(d)]
        if not datas:
            return
        texty = await asyncio.gather(*(asyncio.to_thread(looks_like_text, d) for d in datas))
        language = choose_language(None, config.language, str(guild.preferred_locale))
        jobs: list[tuple[int, TaskSpec, bytes]] = []
        for p, (data, is_text) in enumerate(zip(datas, texty, strict=True)):
            jobs.append((p, TaskSpec.build(Task.DESCRIBE, language=language), data))
            if is_text:
                jobs.append((p, TaskSpec.build(Task.OCR, language=language), data))
        quota = config.quota(s.guild_daily_quota)
        records = bot.queue.records
        reply = {
            "m": str(message.id), "ch": str(message.channel.id), "g": str(guild.id),
            "u": str(message.author.id), "lang": language, "np": str(len(datas)),
            "sz": str(sum(a.size for a in message.attachments)), "ul": str(guild.filesize_limit),
        }  # fmt: skip
        record = records.new(f"alt-{message.id}", [""] * len(jobs), reply, route=ROUTE)
        # Nobody waits on it: a bot that dies before queueing leaves it to expire.
        if not await records.open(record, opening=False):
            return  # the same message seen twice (a resume): described once
        try:
            charge = await bot.limits.charge(guild.id, len(jobs), quota=quota)  # the server's
        except PalicordError:
            await records.drop(record.request_id)  # over the quota: never described
            raise
        models = {w.model_id for w in await bot.queue.workers()} if bot.memory.caching else set()
        queued = 0
        for i, (p, spec, data) in enumerate(jobs):
            digest = await bot.memory.keep_picture(data)
            context = {"p": str(p), PICTURE_FIELD: digest}
            hit = await bot.memory.cached_answer(digest, spec, models)
            if hit is not None:  # identical pictures: the shared answer, no GPU time
                origin = origin_of(str(guild.id), str(message.author.id))
                cached = from_cache(hit, job_id=record.job_id(i), context=context, origin=origin)
                await records.record(record.request_id, i, cached)
                continue
            job = bot.queue.new_job(
                spec, guild_id=guild.id, user_id=message.author.id,
                channel_id=message.channel.id, context=context, job_id=record.job_id(i),
                picture=digest, request=(record.request_id, i),
            )  # fmt: skip
            try:
                await bot.queue.submit(job, data, background=True)
                queued += 1
            except PalicordError as exc:  # full, say: this picture goes without
                failure = JobResult.failure(record.job_id(i), context, exc, task=spec.task)
                await records.record(record.request_id, i, failure)
        await bot.limits.refund(charge, len(jobs) - queued)

    async def _safe(self, data: bytes) -> bool:
        """The engine's own intake checks (size, pixels, hostile encodings), as for any
        request, before the bot itself looks at the picture (`looks_like_text`)."""
        s = self.bot.settings
        try:
            await asyncio.to_thread(
                probe_image, data, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels
            )
        except PalicordError:
            return False
        return True

    # --- results ------------------------------------------------------------------------

    async def handle(self, record: RequestRecord) -> None:
        """A message's descriptions are all in (the Deliverer's route): post the reply."""
        records = self.bot.queue.records
        ctx = record.reply
        per_picture: dict[int, list[JobResult]] = {}
        for outcome in record.outcomes.values():
            per_picture.setdefault(int(outcome.context.get("p", "0")), []).append(outcome)
        described = [described_from(per_picture.get(p, [])) for p in range(int(ctx["np"]))]
        if all(d is None for d in described):
            await records.mark_delivered(record)  # nothing to say: nothing posted, ever
            return
        message_id, channel_id, guild_id = int(ctx["m"]), int(ctx["ch"]), int(ctx["g"])
        poster_id, language = int(ctx["u"]), ctx.get("lang", "en")
        posted = await self.store.get(message_id)
        if posted is not None and posted.gone:  # deleted or fixed while it was described
            await records.mark_delivered(record)
            return
        # As for answers (bot.delivery): one task sends, and the reply counts as posted
        # only once Discord confirmed it.
        rid = record.request_id
        lease = await records.lease(rid, SEND_LEASE_S)
        if lease == "delivered":
            return
        if lease == "busy":
            raise NotSent(f"alt text {rid} is being sent by another task")
        guild = self.bot.get_guild(guild_id)
        channel = self.bot.get_channel(channel_id)
        notes = []
        if await self.store.first_in_guild(guild_id):
            notes.append(OPT_OUT_NOTICE)
        refusal = repost_refusal(channel, guild.me if guild else None)
        if refusal is None and int(ctx.get("sz", "0")) > int(ctx.get("ul", "0")):
            refusal = TOO_LARGE
        if refusal is not None:
            notes.append("-# " + refusal)
        content = compose_reply(described, language, notes=notes)
        view = alt_text_view(poster_id, message_id, repost=refusal is None)
        reply = await self._post(rid, channel, ctx, content, view)
        await records.mark_delivered(record)
        if reply is not None:
            alts = tuple(d.alt_text(language) if d else "" for d in described)
            posted_now = Posted(channel_id, poster_id, reply.id, alts)
            before = await self.store.swap(message_id, posted_now)
            if before is not None and before.gone:  # deleted while the reply was sent
                await self.forget_message(message_id, channel_id)

    async def _post(
        self, rid: str, channel: object, ctx: dict[str, str], content: str, view: discord.ui.View
    ) -> discord.Message | None:
        """The reply to the original, or None when Discord refused it for good (the
        original is gone, or the bot may not post); NotSent when it may succeed later."""
        message_id, channel_id, guild_id = int(ctx["m"]), int(ctx["ch"]), int(ctx["g"])
        target: discord.abc.Messageable
        if isinstance(channel, discord.abc.Messageable):
            target = channel
        else:
            target = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        reference = discord.MessageReference(
            message_id=message_id, channel_id=channel_id, guild_id=guild_id,
            fail_if_not_exists=True,
        )  # fmt: skip
        try:
            return await target.send(
                content,
                reference=reference,
                mention_author=False,
                allowed_mentions=discord.AllowedMentions.none(),
                view=view,
                # One reply per original: a post repeated after a lost confirmation is the
                # same message (Discord enforces the nonce for a few minutes).
                nonce=message_id,
            )
        except discord.HTTPException as exc:
            if exc.status < 500:
                log.info("alt text for message %s not posted: HTTP %s", message_id, exc.status)
                return None
            await self.bot.queue.records.release(rid)
            raise NotSent(f"alt text {rid}: HTTP {exc.status}") from exc
        except Exception as exc:  # a connection error or timeout: try again later
            with contextlib.suppress(PalicordError):
                await self.bot.queue.records.release(rid)
            raise NotSent(f"alt text {rid}: {type(exc).__name__}: {exc}") from exc

    # --- nothing left behind --------------------------------------------------------------

    async def forget_message(self, message_id: int, channel_id: int) -> None:
        """The original is gone or fixed: its reply goes, and none is posted later."""
        before = await self.store.swap(message_id, gone_marker(channel_id))
        if before is not None and before.reply_id:
            with contextlib.suppress(discord.HTTPException):
                await self.bot.http.delete_message(before.channel_id, before.reply_id)

    async def _in_alt_text_channel(self, guild_id: int | None, channel_id: int) -> bool:
        if guild_id is None or not self.bot.settings.message_content_intent:
            return False
        return (await self.bot.configs.get(guild_id)).describes_channel(channel_id)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        with contextlib.suppress(PalicordError):
            if await self._in_alt_text_channel(payload.guild_id, payload.channel_id):
                await self.forget_message(payload.message_id, payload.channel_id)

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        with contextlib.suppress(PalicordError):
            if await self._in_alt_text_channel(payload.guild_id, payload.channel_id):
                for message_id in payload.message_ids:
                    await self.forget_message(message_id, payload.channel_id)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if message.author.bot or message.webhook_id is not None:
            return
        if wanting_alt_text(message, len(message.attachments)):
            return  # still pictures without alt text (a link preview added, say)
        with contextlib.suppress(PalicordError):
            if not await self._in_alt_text_channel(payload.guild_id, payload.channel_id):
                return
            if message.attachments or await self.store.get(message.id) is not None:
                await self.forget_message(message.id, payload.channel_id)

    # --- each person's choice -------------------------------------------------------------

    @app_commands.command(name="alttext")
    @app_commands.describe(
        mine="Whether I may describe the pictures you post in channels where admins turned it on"
    )
    async def alttext(
        self, interaction: discord.Interaction[PalicordBot], mine: bool | None = None
    ) -> None:
        """Automatic descriptions of your pictures: show or change your choice."""
        if mine is not None:
            await self.store.choose(interaction.user.id, allowed=mine)
        allowed = mine if mine is not None else not await self.store.opted_out(interaction.user.id)
        text = (
            "I may describe pictures you post without alt text, in channels where admins "
            "turned automatic alt text on. `/alttext mine:False` stops that everywhere."
            if allowed
            else "I do not describe the pictures you post. `/alttext mine:True` allows it again."
        )
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(AltText(bot))
