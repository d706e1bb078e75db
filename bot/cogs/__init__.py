"""One cog per feature, each an extension loaded by `PalicordBot.setup_hook`; and the
helpers they share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from inference.tasks import LANGUAGES

if TYPE_CHECKING:
    from bot.client import PalicordBot

MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


async def language_autocomplete(
    interaction: discord.Interaction[PalicordBot], current: str
) -> list[app_commands.Choice[str]]:
    """Language codes PaliGemma 2 knows, filtered by what the user typed."""
    typed = current.strip().lower()
    codes = sorted(c for c in LANGUAGES if c.startswith(typed)) or sorted(LANGUAGES)
    return [app_commands.Choice(name=c, value=c) for c in codes[:MAX_CHOICES]]
