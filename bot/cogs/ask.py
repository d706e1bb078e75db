"""/ask: a question about an image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs import language_autocomplete
from bot.download import ImageRef
from bot.events import run_interaction
from bot.requests import Ask as AskRequest
from inference.tasks import MAX_QUESTION_CHARS, Task

if TYPE_CHECKING:
    from bot.client import PalicordBot


class Ask(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot

    @app_commands.command(name="ask")
    @app_commands.describe(
        image="The picture to ask about",
        question="What you want to know, e.g. what colour is the car?",
        language="Answer in this language (default: your Discord language)",
    )
    @app_commands.autocomplete(language=language_autocomplete)
    async def ask(
        self,
        interaction: discord.Interaction[PalicordBot],
        image: discord.Attachment,
        question: app_commands.Range[str, 1, MAX_QUESTION_CHARS],
        language: str | None = None,
    ) -> None:
        """Ask a question about an image."""
        ref = ImageRef.from_attachment(image)
        ask = AskRequest(Task.ANSWER, language=language, question=question)
        await run_interaction(self.bot.requests, interaction, [ref], ask)


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Ask(bot))
