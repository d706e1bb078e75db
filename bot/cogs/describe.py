"""/describe and the "Describe image" message menu."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs import language_autocomplete
from bot.download import ImageRef
from bot.events import run_interaction
from bot.requests import Ask
from inference.tasks import Task

if TYPE_CHECKING:
    from bot.client import PalicordBot


class Describe(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot
        # Context menus cannot be declared inside a Cog class; build here, add in cog_load.
        self.menu = app_commands.ContextMenu(name="Describe image", callback=self.describe_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe")
    @app_commands.describe(
        image="The picture to describe",
        detail="short: one sentence; long: a detailed paragraph",
        language="Answer in this language (default: your Discord language)",
    )
    @app_commands.autocomplete(language=language_autocomplete)
    async def describe(
        self,
        interaction: discord.Interaction[PalicordBot],
        image: discord.Attachment,
        detail: Literal["short", "long"] = "short",
        language: str | None = None,
    ) -> None:
        """Describe an image in one sentence or in detail."""
        task = Task.DESCRIBE if detail == "long" else Task.CAPTION
        ref = ImageRef.from_attachment(image)
        await run_interaction(self.bot.requests, interaction, [ref], Ask(task, language=language))

    async def describe_message(
        self, interaction: discord.Interaction[PalicordBot], message: discord.Message
    ) -> None:
        await run_interaction(
            self.bot.requests, interaction, self.bot.pictures.find(message), Ask(Task.CAPTION)
        )


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Describe(bot))
