"""Compose the one final message of a request from its per-image results.

One message always: long text is cut to fit its embed and attached in full as a .txt,
detections come as an annotated PNG plus the raw boxes as JSON.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import discord

from bot import render
from inference.annotate import annotate
from inference.detection import Detection
from inference.errors import PalicordError
from inference.intake import load_image
from inference.jobs import JobResult

log = logging.getLogger(__name__)

# A single answer's embeds share Discord's 6,000-character budget; titles take some.
_TITLE_RESERVE = 300
_NO_TEXT = {"ocr": "No text found.", "detect": "Nothing found."}
COLOUR_OK = discord.Colour.blurple()
COLOUR_ERROR = discord.Colour.red()

# (image bytes, detections, max output bytes) -> (encoded image, file extension), or None.
Annotator = Callable[[bytes, Sequence[Detection], int], tuple[bytes, str] | None]


def draw_boxes(
    image: bytes, detections: Sequence[Detection], max_bytes: int
) -> tuple[bytes, str] | None:
    """The default Annotator: the engine's own drawing code on the upright original."""
    try:
        loaded = load_image(image)
        drawn = annotate(loaded.image, detections, max_bytes=max_bytes)
    except (PalicordError, ValueError) as exc:
        log.info("could not draw detections: %s", exc)
        return None
    return drawn.data, drawn.extension


@dataclass(frozen=True, slots=True)
class OutFile:
    filename: str
    data: bytes

    def to_discord(self) -> discord.File:
        # A discord.File is consumed by one send; build a fresh one per attempt.
        return discord.File(io.BytesIO(self.data), filename=self.filename)


@dataclass(frozen=True, slots=True)
class Answer:
    """Everything one Discord message carries."""

    content: str = ""
    embeds: tuple[discord.Embed, ...] = ()
    files: tuple[OutFile, ...] = field(default_factory=tuple)

    def discord_files(self) -> list[discord.File]:
        return [f.to_discord() for f in self.files]


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """One image's result with what is needed to show it."""

    label: str
    result: JobResult
    image: bytes | None = None  # for drawing detection boxes


def _text_body(result: JobResult, budget: int) -> tuple[str, OutFile | None, str]:
    """(description, overflow file or None, short name of the task)."""
    task = result.task or "answer"
    text = result.text.strip()
    if not text:
        return _NO_TEXT.get(task, "(no answer)"), None, task
    if task == "ocr":
        full = render.safe_code_block(text, limit=len(text) * 3 + 16)
        body = full if len(full) <= budget else render.safe_code_block(text, budget)
    else:
        full = render.safe_text(text)
        body = full if len(full) <= budget else render.truncate(full, budget)
    overflow = None if body is full else OutFile(f"{task}.txt", text.encode())
    return body, overflow, task


def _boxes_json(detections: Sequence[Detection]) -> bytes:
    return json.dumps([d.to_dict() for d in detections], indent=2).encode()


def compose(
    items: Sequence[ItemAnswer],
    *,
    annotator: Annotator,
    max_file_bytes: int,
) -> Answer:
    """The final message for `items` (one per image, in order)."""
    multi = len(items) > 1
    budget = min(
        render.EMBED_DESCRIPTION_LIMIT,
        (render.EMBED_TOTAL_LIMIT - _TITLE_RESERVE) // max(len(items), 1),
    )
    embeds: list[discord.Embed] = []
    files: list[OutFile] = []
    for n, item in enumerate(items[: render.MAX_EMBEDS], start=1):
        title = f"Image {n} · {render.safe_inline(item.label, 200)}" if multi else None
        result = item.result
        if not result.ok:
            error = result.exception()
            message = error.message if error is not None else "That request failed."
            embeds.append(
                discord.Embed(title=title, description="⚠️ " + message, colour=COLOUR_ERROR)
            )
            continue
        if result.task == "detect":
            embed = discord.Embed(
                title=title, description=render.legend(result.detections), colour=COLOUR_OK
            )
            drawn = None
            if item.image is not None and result.detections:
                drawn = annotator(item.image, result.detections, max_file_bytes)
            if drawn is not None:
                name = f"detections-{n}.{drawn[1]}"
                files.append(OutFile(name, drawn[0]))
                embed.set_image(url=f"attachment://{name}")
            files.append(OutFile(f"boxes-{n}.json", _boxes_json(result.detections)))
            embeds.append(embed)
            continue
        body, overflow, task = _text_body(result, budget)
        if overflow is not None:
            files.append(OutFile(f"{task}-{n}.txt" if multi else overflow.filename, overflow.data))
        embeds.append(discord.Embed(title=title, description=body, colour=COLOUR_OK))
    return Answer(embeds=tuple(embeds), files=tuple(files[: render.MAX_FILES]))


def error_answer(message: str) -> Answer:
    """A short error as the whole answer (for a request none of whose images got queued)."""
    return Answer(content="⚠️ " + render.safe_inline(message, render.MESSAGE_LIMIT - 2))
