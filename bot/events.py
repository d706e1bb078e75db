"""Discord events into requests: a slash command or context menu (`run_interaction`) and
a message that mentions the bot (`run_mention`). Each takes the path of `bot.requests`:
admit within Discord's 3 s, acknowledge, then queue. What fails reaches the user through
`bot.errors.report_error`, like every other error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, TypeVar

import discord
from discord import app_commands

from bot.download import ImageRef
from bot.errors import report_error
from bot.replies import ReplyAddress, interaction_address
from bot.requests import ADMIT_BUDGET_S, Ask, Requests
from inference.annotate import DISCORD_UPLOAD_LIMIT_BYTES
from inference.errors import QueueUnavailable
from inference.ops import log_ids
from inference.queue import RequestRecord

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)
T = TypeVar("T")


# --- acknowledging in time -------------------------------------------------------------


async def in_time(call: Awaitable[T]) -> T:
    """`call`, or QueueUnavailable once ADMIT_BUDGET_S has passed."""
    try:
        async with asyncio.timeout(ADMIT_BUDGET_S):
            return await call
    except TimeoutError as exc:
        raise QueueUnavailable() from exc


def message_address(message: discord.Message) -> ReplyAddress:
    """Where a mention's answer goes: the bot's reply to it (its id set once posted)."""
    return ReplyAddress(
        channel_id=message.channel.id,
        user_id=message.author.id,
        guild_id=message.guild.id if message.guild else None,
        message_id=None,
        reply_to_id=message.id,
        upload_limit_bytes=(
            message.guild.filesize_limit if message.guild else DISCORD_UPLOAD_LIMIT_BYTES
        ),
        parent_channel_id=getattr(message.channel, "parent_id", None),
    )


async def run_interaction(
    service: Requests,
    interaction: discord.Interaction[PalicordBot],
    refs: Sequence[ImageRef],
    ask: Ask,
    *,
    kind: str | None = None,
) -> None:
    """Check, defer (within Discord's 3 s), then queue. Refusals before the deferral go
    to the caller's error handler, later ones are answered here; all privately. `kind`
    (for the metrics): slash, context_menu (the default from the command) or button."""
    asked = interaction_address(interaction)
    if kind is None:
        kind = "slash" if isinstance(interaction.command, app_commands.Command) else "context_menu"
    try:
        config, images = await in_time(service.admit(asked, refs))
        spec = service.spec(ask, config=config, locale=str(interaction.locale))
    except Exception as exc:
        service.count(kind, exc)
        raise
    callback = await interaction.response.defer(thinking=True)
    service.acknowledged(interaction)
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    record = await service.open(images, dataclasses.replace(asked, message_id=message_id))
    try:
        with log_ids(request_id=record.request_id):
            await service.submit(images, record, spec, config)
        service.count(kind)
    except Exception as exc:
        # Answered here rather than by the tree's handler: the intake closes only once
        # the user has been told.
        service.count(kind, exc)
        if not await report_error(interaction, exc, what=f"request {record.request_id}"):
            return  # not told: the intake stays open, and the next run tells them
        await service.close(record, refused=True)
        return
    await service.close(record)


async def run_mention(
    service: Requests, message: discord.Message, refs: Sequence[ImageRef], ask: Ask
) -> None:
    """Reply with a progress message, queue, and turn the reply into an error if needed."""
    asked = message_address(message)
    try:
        config, images = await in_time(service.admit(asked, refs))
        # Messages carry no user locale: the guild's language setting, then its locale.
        guild_locale = str(message.guild.preferred_locale) if message.guild else None
        spec = service.spec(ask, config=config, guild_locale=guild_locale)
    except Exception as exc:
        service.count("mention", exc)
        await report_error(message, exc, what="mention")
        return
    reply = await message.reply("🔎 Looking…", mention_author=False)
    address = dataclasses.replace(asked, message_id=reply.id)
    record: RequestRecord | None = None
    refused = False
    try:
        record = await service.open(images, address)
        await service.submit(images, record, spec, config)
        service.count("mention")
    except Exception as exc:
        service.count("mention", exc)
        refused = await report_error(message, exc, what="mention request", reply=reply)
    if record is not None:
        await service.close(record, refused=refused)
