"""/detect and /segment, and their message menus ("Detect objects…", "Segment…"), which
ask for the objects in a modal: finding objects, as boxes or as masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.download import ImageRef
from bot.errors import NoImageFound
from bot.events import run_interaction
from bot.followups import MAX_OBJECTS_CHARS, DetectModal
from bot.requests import Ask
from inference.tasks import Task

if TYPE_CHECKING:
    from bot.client import PalicordBot


class Detect(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot
        self.menus = (
            app_commands.ContextMenu(name="Detect objects…", callback=self.detect_message),
            app_commands.ContextMenu(name="Segment…", callback=self.segment_message),
        )

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    @app_commands.command(name="detect")
    @app_commands.describe(
        image="The picture to search",
        objects="What to find, separated by ; or , (e.g. cat ; dog)",
    )
    async def detect(
        self,
        interaction: discord.Interaction[PalicordBot],
        image: discord.Attachment,
        objects: app_commands.Range[str, 1, MAX_OBJECTS_CHARS],
    ) -> None:
        """Find objects in an image and draw boxes around them."""
        ref = ImageRef.from_attachment(image)
        ask = Ask(Task.DETECT, objects=objects)
        await run_interaction(self.bot.requests, interaction, [ref], ask)

    @app_commands.command(name="segment")
    @app_commands.describe(
        image="The picture to search",
        objects="What to outline, separated by ; or , (e.g. cat ; dog)",
    )
    async def segment(
        self,
        interaction: discord.Interaction[PalicordBot],
        image: discord.Attachment,
        objects: app_commands.Range[str, 1, MAX_OBJECTS_CHARS],
    ) -> None:
        """Find objects in an image and colour in their exact shapes."""
        ref = ImageRef.from_attachment(image)
        ask = Ask(Task.SEGMENT, objects=objects)
        await run_interaction(self.bot.requests, interaction, [ref], ask)

    async def detect_message(
        self, interaction: discord.Interaction[PalicordBot], message: discord.Message
    ) -> None:
        await self._ask_objects(interaction, message, Task.DETECT)

    async def segment_message(
        self, interaction: discord.Interaction[PalicordBot], message: discord.Message
    ) -> None:
        await self._ask_objects(interaction, message, Task.SEGMENT)

    async def _ask_objects(
        self, interaction: discord.Interaction[PalicordBot], message: discord.Message, task: Task
    ) -> None:
        images = self.bot.pictures.find(message)
        if not images:  # say so now rather than after the user filled in the modal
            raise NoImageFound()

        async def find(submitted: discord.Interaction[PalicordBot], objects: str) -> None:
            ask = Ask(task, objects=objects)
            await run_interaction(self.bot.requests, submitted, images, ask)

        timeout_s = self.bot.settings.interaction_token_ttl_s
        await interaction.response.send_modal(DetectModal(find, timeout_s=timeout_s, task=task))


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Detect(bot))
