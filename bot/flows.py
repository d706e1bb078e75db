"""The shared shape of every request: acknowledge in time, queue, or refuse politely.

Interactions are refused privately (ephemeral); mentions get a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import discord
from discord import app_commands

from bot.address import ReplyAddress
from bot.download import ImageRef
from bot.errors import user_message
from bot.service import Ask, VisionService, Who, interaction_address
from bot.settings import DISCORD_UPLOAD_LIMIT_BYTES
from inference.errors import PalicordError, QueueUnavailable
from inference.tasks import LANGUAGES

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_CHOICES = 25
# Discord forgets an interaction not acknowledged within 3 s. The checks before the
# acknowledgement read Redis; one that accepts connections but does not answer must not
# eat that window, or the user sees only "The application did not respond".
ADMIT_BUDGET_S = 2.0


def message_images(message: discord.Message) -> list[ImageRef]:
    """The attachments of `message` worth trying as images."""
    refs = [ImageRef.from_attachment(a) for a in message.attachments]
    return [r for r in refs if r.looks_like_image()]


async def in_time(call: Awaitable[T]) -> T:
    """`call`, or QueueUnavailable once ADMIT_BUDGET_S has passed."""
    try:
        async with asyncio.timeout(ADMIT_BUDGET_S):
            return await call
    except TimeoutError as exc:
        raise QueueUnavailable() from exc


def who_of_interaction(interaction: discord.Interaction) -> Who:
    channel = interaction.channel
    parent = getattr(channel, "parent_id", None)
    assert interaction.channel_id is not None
    return Who(interaction.user.id, interaction.guild_id, interaction.channel_id, parent)


def who_of_message(message: discord.Message) -> Who:
    parent = getattr(message.channel, "parent_id", None)
    guild_id = message.guild.id if message.guild else None
    return Who(message.author.id, guild_id, message.channel.id, parent)


async def run_interaction(
    service: VisionService,
    interaction: discord.Interaction,
    refs: Sequence[ImageRef],
    ask: Ask,
) -> None:
    """Check, defer (within Discord's 3 s), then queue. Errors propagate to the caller's
    error handler, which answers ephemerally (see `respond_error`)."""
    who = who_of_interaction(interaction)
    config, images = await in_time(service.admit(who, refs))
    spec = service.spec(ask, config=config, locale=str(interaction.locale))
    callback = await interaction.response.defer(thinking=True)
    message_id = callback.message_id if callback is not None else None
    if message_id is None:
        message_id = (await interaction.original_response()).id
    address = interaction_address(interaction, message_id)
    await service.submit(who, images, spec, address, config)


async def respond_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong, privately, whether or not we deferred already."""
    text = "⚠️ " + user_message(error)
    try:
        if interaction.response.is_done():
            # A deferred response is public; drop it so the error can be private.
            with contextlib.suppress(discord.HTTPException):
                await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not report an error to the user: HTTP %s", exc.status)


async def run_mention(
    service: VisionService, message: discord.Message, refs: Sequence[ImageRef], ask: Ask
) -> None:
    """Reply with a progress message, queue, and turn the reply into an error if needed."""
    who = who_of_message(message)
    try:
        config, images = await in_time(service.admit(who, refs))
        # Messages carry no user locale: the guild's language setting, then its locale.
        guild_locale = str(message.guild.preferred_locale) if message.guild else None
        spec = service.spec(ask, config=config, guild_locale=guild_locale)
    except PalicordError as exc:
        await message.reply("⚠️ " + exc.message, mention_author=False)
        return
    reply = await message.reply("🔎 Looking…", mention_author=False)
    address = ReplyAddress(
        channel_id=who.channel_id,
        user_id=who.user_id,
        guild_id=who.guild_id,
        message_id=reply.id,
        reply_to_id=message.id,
        upload_limit_bytes=(
            message.guild.filesize_limit if message.guild else DISCORD_UPLOAD_LIMIT_BYTES
        ),
    )
    try:
        await service.submit(who, images, spec, address, config)
    except PalicordError as exc:
        await reply.edit(content="⚠️ " + exc.message)


async def language_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Language codes PaliGemma 2 knows, filtered by what the user typed."""
    typed = current.strip().lower()
    codes = sorted(c for c in LANGUAGES if c.startswith(typed)) or sorted(LANGUAGES)
    return [app_commands.Choice(name=c, value=c) for c in codes[:MAX_CHOICES]]
