"""Follow-ups on an answer: its buttons ("Ask about this image", "Describe in detail",
"Detect…", "Segment…", "Read text": Discord's five a row) and replies to it run on the
same picture without a new upload.

A button holds all it needs in its `custom_id` (`pc:<action>:<picture digest>`), and the
picture is kept in Redis (`inference.queue.memory`), so the bot keeps no per-message state
and the buttons of an answer posted before a restart still work after it (discord.py's
`DynamicItem`, registered at start-up). A press runs like any slash command
(`PalicordBot.follow_up`): in the channel where it was pressed, against the presser's own
limits. A picture that is no longer kept (PICTURE_TTL_S, or dropped for space) gets a
polite request for a new upload.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import discord

from bot.errors import PictureExpired
from inference.queue.memory import DIGEST_HEX
from inference.tasks import MAX_QUESTION_CHARS, Task

PREFIX = "pc"
ACTIONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "ask": ("Ask about this image", discord.ButtonStyle.primary),
    "describe": ("Describe in detail", discord.ButtonStyle.secondary),
    "detect": ("Detect…", discord.ButtonStyle.secondary),
    "segment": ("Segment…", discord.ButtonStyle.secondary),
    "ocr": ("Read text", discord.ButtonStyle.secondary),
}
TEMPLATE = rf"{PREFIX}:(?P<action>{'|'.join(ACTIONS)}):(?P<digest>[0-9a-f]{{{DIGEST_HEX}}})"
_CUSTOM_ID_RE = re.compile(TEMPLATE)
MAX_ROWS = 5  # Discord's limit of action rows per message: one row per picture
MAX_OBJECTS_CHARS = 200
MODAL_TIMEOUT_S = 15 * 60


@runtime_checkable
class Runner(Protocol):
    """What a press needs from the bot (PalicordBot): whether the picture is still kept,
    and running a request on it as a slash command would."""

    async def has_picture(self, digest: str) -> bool: ...

    async def follow_up(
        self, interaction: discord.Interaction, digest: str, task: Task, **ask: str
    ) -> None: ...


def _runner(interaction: discord.Interaction) -> Runner:
    client = interaction.client
    assert isinstance(client, Runner)
    return client


class FollowUp(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE):
    """One follow-up button on one picture of an answer."""

    def __init__(self, action: str, digest: str, *, number: int | None = None) -> None:
        label, style = ACTIONS[action]
        if number is not None:
            label = f"{label} ({number})"
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=f"{PREFIX}:{action}:{digest}")
        )
        self.action, self.digest = action, digest

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> FollowUp:
        return cls(match["action"], match["digest"])

    async def callback(self, interaction: discord.Interaction) -> None:
        runner = _runner(interaction)
        if self.action in ("describe", "ocr"):
            task = Task.DESCRIBE if self.action == "describe" else Task.OCR
            await runner.follow_up(interaction, self.digest, task)
        elif not await runner.has_picture(self.digest):
            # Said before the modal opens, not after the user has typed a question.
            text = "⚠️ " + PictureExpired().message
            await interaction.response.send_message(text, ephemeral=True)
        elif self.action == "ask":
            await interaction.response.send_modal(AskModal(self.digest))
        else:
            task = Task.SEGMENT if self.action == "segment" else Task.DETECT
            await interaction.response.send_modal(ObjectsModal(self.digest, task))


class AskModal(discord.ui.Modal, title="Ask about this image"):
    question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
        label="Your question",
        placeholder="e.g. what colour is the car?",
        max_length=MAX_QUESTION_CHARS,
    )

    def __init__(self, digest: str) -> None:
        super().__init__(timeout=MODAL_TIMEOUT_S)
        self.digest = digest

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await _runner(interaction).follow_up(
            interaction, self.digest, Task.ANSWER, question=self.question.value
        )


class ObjectsModal(discord.ui.Modal, title="Detect objects"):
    """Which objects to detect (or segment, `task`) on the picture behind a button."""

    objects: discord.ui.TextInput[ObjectsModal] = discord.ui.TextInput(
        label="Objects to find, separated by ;",
        placeholder="e.g. cat ; dog",
        max_length=MAX_OBJECTS_CHARS,
    )

    def __init__(self, digest: str, task: Task = Task.DETECT) -> None:
        title = "Segment objects" if task is Task.SEGMENT else "Detect objects"
        super().__init__(timeout=MODAL_TIMEOUT_S, title=title)
        self.digest, self.task = digest, task

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await _runner(interaction).follow_up(
            interaction, self.digest, self.task, objects=self.objects.value
        )


def follow_up_view(digests: Sequence[str | None]) -> discord.ui.View | None:
    """Buttons for the pictures of an answer, one row per picture (None: no buttons for
    that one, e.g. it failed). Persistent: no timeout, everything in the custom_ids."""
    numbered = sum(1 for d in digests if d) > 1
    view = discord.ui.View(timeout=None)
    rows = 0
    for n, digest in enumerate(digests, start=1):
        if not digest or rows == MAX_ROWS:
            continue
        for action in ACTIONS:
            button = FollowUp(action, digest, number=n if numbered else None)
            button.item.row = rows
            view.add_item(button)
        rows += 1
    return view if rows else None


def digests_of(message: discord.Message) -> list[str]:
    """The pictures behind the follow-up buttons of one of the bot's answers, in order."""
    out: list[str] = []
    for row in message.components:
        for child in getattr(row, "children", ()):
            match = _CUSTOM_ID_RE.fullmatch(getattr(child, "custom_id", None) or "")
            if match and match["digest"] not in out:
                out.append(match["digest"])
    return out
