"""/ocr and the "Read text (OCR)" message menu."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.download import ImageRef
from bot.events import run_interaction
from bot.requests import Ask
from inference.tasks import Task

if TYPE_CHECKING:
    from bot.client import PalicordBot


class Ocr(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Read text (OCR)", callback=self.ocr_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="ocr")
    @app_commands.describe(image="The picture to read text from")
    async def ocr(
        self, interaction: discord.Interaction[PalicordBot], image: discord.Attachment
    ) -> None:
        """Read the text in an image."""
        ref = ImageRef.from_attachment(image)
        await run_interaction(self.bot.requests, interaction, [ref], Ask(Task.OCR))

    async def ocr_message(
        self, interaction: discord.Interaction[PalicordBot], message: discord.Message
    ) -> None:
        await run_interaction(
            self.bot.requests, interaction, self.bot.pictures.find(message), Ask(Task.OCR)
        )


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Ocr(bot))
