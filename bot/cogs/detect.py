"""/detect and /segment, and their message menus ("Detect objects…", "Segment…"), which
ask for the objects in a modal: finding objects, as boxes or as masks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.download import ImageRef
from bot.errors import NoImageFound
from bot.events import respond_error, run_interaction
from bot.requests import Ask, Requests
from inference.tasks import Task

if TYPE_CHECKING:
    from bot.client import PalicordBot

MAX_OBJECTS_INPUT = 200


class ObjectsModal(discord.ui.Modal, title="Detect objects"):
    """Asks which objects to find (`task`: detect or segment) in the images of the chosen
    message."""

    def __init__(self, requests: Requests, images: Sequence[ImageRef], task: Task) -> None:
        super().__init__(title="Segment objects" if task is Task.SEGMENT else "Detect objects")
        self._requests = requests
        self._images = list(images)
        self._task = task
        self.objects: discord.ui.TextInput[ObjectsModal] = discord.ui.TextInput(
            placeholder="cat ; dog ; bicycle", max_length=MAX_OBJECTS_INPUT
        )
        self.add_item(discord.ui.Label(text="Objects to find", component=self.objects))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        ask = Ask(self._task, objects=self.objects.value)
        await run_interaction(self._requests, interaction, self._images, ask)

    async def on_error(  # type: ignore[override]  # Modal's own signature has no item
        self, interaction: discord.Interaction, error: Exception, /
    ) -> None:
        # Modals report to their own on_error, not to the tree's.
        await respond_error(interaction, error)


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
        interaction: discord.Interaction,
        image: discord.Attachment,
        objects: app_commands.Range[str, 1, MAX_OBJECTS_INPUT],
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
        interaction: discord.Interaction,
        image: discord.Attachment,
        objects: app_commands.Range[str, 1, MAX_OBJECTS_INPUT],
    ) -> None:
        """Find objects in an image and colour in their exact shapes."""
        ref = ImageRef.from_attachment(image)
        ask = Ask(Task.SEGMENT, objects=objects)
        await run_interaction(self.bot.requests, interaction, [ref], ask)

    async def detect_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        await self._ask_objects(interaction, message, Task.DETECT)

    async def segment_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        await self._ask_objects(interaction, message, Task.SEGMENT)

    async def _ask_objects(
        self, interaction: discord.Interaction, message: discord.Message, task: Task
    ) -> None:
        images = self.bot.pictures.find(message)
        if not images:  # say so now rather than after the user filled in the modal
            raise NoImageFound()
        await interaction.response.send_modal(ObjectsModal(self.bot.requests, images, task))


async def setup(bot: commands.Bot) -> None:
    from bot.client import PalicordBot

    assert isinstance(bot, PalicordBot)
    await bot.add_cog(Detect(bot))
