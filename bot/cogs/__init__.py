"""One cog per feature, each an extension loaded by `PalicordBot.setup_hook`; and the
helpers they share."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.download import ImageRef
from inference.tasks import LANGUAGES

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


def message_images(message: discord.Message) -> list[ImageRef]:
    """The attachments of `message` worth trying as images."""
    refs = [ImageRef.from_attachment(a) for a in message.attachments]
    return [r for r in refs if r.looks_like_image()]


async def language_autocomplete(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Language codes PaliGemma 2 knows, filtered by what the user typed."""
    typed = current.strip().lower()
    codes = sorted(c for c in LANGUAGES if c.startswith(typed)) or sorted(LANGUAGES)
    return [app_commands.Choice(name=c, value=c) for c in codes[:MAX_CHOICES]]
