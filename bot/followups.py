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
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import ReportsErrors, report_error
from inference.errors import PictureExpired
from inference.queue.memory import DIGEST_HEX
from inference.tasks import MAX_QUESTION_CHARS, Task

if TYPE_CHECKING:
    from bot.client import PalicordBot

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
MAX_OBJECTS_CHARS = 200  # the objects to detect, in /detect and in its modal


class FollowUp(
    ReportsErrors, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE
):
    """One follow-up button on one picture of an answer."""

    def __init__(self, action: str, digest: str, *, number: int | None = None) -> None:
        label, style = ACTIONS[action]
        if number is not None:
            label = f"{label} ({number})"
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=f"{PREFIX}:{action}:{digest}")
        )
        self.action, self.digest = action, digest
        self.what = f"button {action}"

    # discord.py types its hooks with an unbound ClientT; ours take this bot's interactions.
    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction[PalicordBot],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> FollowUp:
        return cls(match["action"], match["digest"])

    async def press(self, interaction: discord.Interaction[PalicordBot]) -> None:
        bot, digest = interaction.client, self.digest
        timeout_s = bot.settings.interaction_token_ttl_s
        if self.action in ("describe", "ocr"):
            task = Task.DESCRIBE if self.action == "describe" else Task.OCR
            await bot.follow_up(interaction, digest, task)
        elif not await bot.has_picture(digest):
            raise PictureExpired()  # now, not after the user has typed a question
        elif self.action == "ask":

            async def ask(submitted: discord.Interaction[PalicordBot], question: str) -> None:
                await bot.follow_up(submitted, digest, Task.ANSWER, question=question)

            await interaction.response.send_modal(AskModal(ask, timeout_s=timeout_s))
        else:
            task = Task.SEGMENT if self.action == "segment" else Task.DETECT

            async def find(submitted: discord.Interaction[PalicordBot], objects: str) -> None:
                await bot.follow_up(submitted, digest, task, objects=objects)

            modal = DetectModal(find, timeout_s=timeout_s, task=task)
            await interaction.response.send_modal(modal)


# What a modal does with the text submitted.
Submit = Callable[["discord.Interaction[PalicordBot]", str], Awaitable[None]]


class _TextModal(discord.ui.Modal):
    """Hands the text typed in to `submit`; what that raises reaches the user through
    `report_error`, from discord.py's `Modal.on_error` hook. It waits as long as the
    interaction token that opened it lives."""

    def __init__(self, submit: Submit, *, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s)
        self._submit = submit

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[PalicordBot], error: Exception, /
    ) -> None:
        await report_error(interaction, error, what=f"modal {self.title}")


class AskModal(_TextModal, title="Ask about this image"):
    question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(
        label="Your question",
        placeholder="e.g. what colour is the car?",
        max_length=MAX_QUESTION_CHARS,
    )

    async def on_submit(self, interaction: discord.Interaction[PalicordBot]) -> None:  # type: ignore[override]
        await self._submit(interaction, self.question.value)


class DetectModal(_TextModal, title="Detect objects"):
    """Which objects to find (to detect, or to segment with `task`): for an answer's
    "Detect…" and "Segment…" buttons and for the matching message menus alike."""

    def __init__(self, submit: Submit, *, timeout_s: float, task: Task = Task.DETECT) -> None:
        super().__init__(submit, timeout_s=timeout_s)
        if task is Task.SEGMENT:
            self.title = "Segment objects"
        self.objects: discord.ui.TextInput[DetectModal] = discord.ui.TextInput(
            placeholder="cat ; dog ; bicycle", max_length=MAX_OBJECTS_CHARS
        )
        label = discord.ui.Label(
            text="Objects to find", description="Separate them with ;", component=self.objects
        )
        self.add_item(label)

    async def on_submit(self, interaction: discord.Interaction[PalicordBot]) -> None:  # type: ignore[override]
        await self._submit(interaction, self.objects.value)


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
