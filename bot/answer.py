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
# 1/16 of the upload limit is left for the small JSON and text files beside the pictures.
_TEXT_FILES_SHARE = 16
_NO_TEXT = {"ocr": "No text found.", "detect": "Nothing found."}
COLOUR_OK = discord.Colour.blurple()
COLOUR_ERROR = discord.Colour.red()

# (image bytes, detections, max output bytes) -> (encoded image, file extension). Raises
# ValueError when no encoding fits the byte cap, PalicordError when the image is unreadable.
Annotator = Callable[[bytes, Sequence[Detection], int], tuple[bytes, str]]


def draw_boxes(image: bytes, detections: Sequence[Detection], max_bytes: int) -> tuple[bytes, str]:
    """The default Annotator: the engine's own drawing code on the upright original. PNG
    when it fits, else JPEG (extension "jpg"), shrunk as far as still useful."""
    drawn = annotate(load_image(image).image, detections, max_bytes=max_bytes)
    return drawn.data, drawn.extension


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


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


def _detection(
    item: ItemAnswer, n: int, title: str | None, annotator: Annotator, max_bytes: int
) -> tuple[discord.Embed, OutFile | None]:
    """The legend embed and, when it can be drawn within `max_bytes`, the marked-up picture."""
    detections = item.result.detections
    description = render.legend(detections)
    drawn: OutFile | None = None
    if item.image is not None and detections:
        try:
            data, extension = annotator(item.image, detections, max_bytes)
        except ValueError:
            description += (
                f"\n\nThe picture with its boxes would not fit the {_mib(max_bytes)} upload "
                f"limit here; the boxes are in boxes-{n}.json."
            )
        except PalicordError as exc:
            log.info("could not draw detections: %s", exc.code)
            description += f"\n\nI couldn't draw the boxes; they are in boxes-{n}.json."
        else:
            drawn = OutFile(f"detections-{n}.{extension}", data)
    embed = discord.Embed(title=title, description=description, colour=COLOUR_OK)
    if drawn is not None:
        embed.set_image(url=f"attachment://{drawn.filename}")
    return embed, drawn


def compose(
    items: Sequence[ItemAnswer],
    *,
    annotator: Annotator,
    max_file_bytes: int,
) -> Answer:
    """The final message for `items` (one per image, in order); attached pictures together
    stay within `max_file_bytes`, the destination's upload limit."""
    multi = len(items) > 1
    drawable = sum(1 for i in items if i.result.ok and i.result.detections and i.image)
    # Discord states its limit per file; sharing it between a message's pictures keeps the
    # whole upload within it as well, and annotated pictures are rarely near the limit.
    pictures_bytes = max_file_bytes - max_file_bytes // _TEXT_FILES_SHARE
    per_image_bytes = pictures_bytes // max(drawable, 1)
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
            # Error text crossed Redis from the worker: it must not ping either.
            description = render.truncate("⚠️ " + render.neutralize_mentions(message), budget)
            embeds.append(discord.Embed(title=title, description=description, colour=COLOUR_ERROR))
            continue
        if result.task == "detect":
            embed, drawn = _detection(item, n, title, annotator, per_image_bytes)
            if drawn is not None:
                files.append(drawn)
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
