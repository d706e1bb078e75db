"""Compose the one final message of a request from its per-image results, with every
piece of untrusted text (model output, file names, worker error text) made safe to post.

One message always: long text is cut to fit its embed and attached in full as a .txt,
detections come as an annotated picture plus the raw boxes as JSON. Boxes are drawn on
the display-sized copy the worker sends with the result (`inference.display`), or for a
result without one on the picture kept in Redis reduced to display size, never on the
full-size upload.

Safe means: it cannot ping anyone even if `allowed_mentions` were misconfigured, it
cannot change the formatting around it (no bold/links/headings/code-block breakouts),
and it fits Discord's length limits.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import discord

from inference.annotate import annotate
from inference.detection import Detection
from inference.display import reduced_picture, scale_detections
from inference.errors import PalicordError
from inference.intake import LoadedImage
from inference.queue import JobResult
from inference.queue.memory import FROM_CACHE, SAME_ORIGIN, age_s
from inference.segmentation import segments_json
from inference.tasks import NOTE_FIELD, Task

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2_000  # characters of a message's content
EMBED_DESCRIPTION_LIMIT = 4_096
EMBED_TITLE_LIMIT = 256
EMBED_TOTAL_LIMIT = 6_000  # across all embeds of one message
MAX_EMBEDS = 10
MAX_FILES = 10

ZWSP = "\u200b"
ELLIPSIS = "…"

# Control characters other than newline and tab can hide text or confuse clients.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
# Mass mentions and <@id>, <@!id>, <@&id>, <#id>: a zero-width space after the sigil keeps
# the text readable while Discord no longer parses it as a mention.
_MENTION_RE = re.compile(r"@(?=everyone|here)|<(?=[@#])")

# A single answer's embeds share Discord's 6,000-character budget; titles take some.
_TITLE_RESERVE = 300
# 1/16 of the upload limit is left for the small JSON and text files beside the pictures.
_TEXT_FILES_SHARE = 16
_NO_TEXT = {Task.OCR: "No text found.", Task.DETECT: "Nothing found."}
# The job context's "k/n": an animation was answered about its frame k of n.
FRAME_FIELD = "frame"
COLOUR_OK = discord.Colour.blurple()
COLOUR_ERROR = discord.Colour.red()


def _strip_controls(text: str) -> str:
    return _CONTROL_RE.sub("", text)


def neutralize_mentions(text: str) -> str:
    """Break every mention form (`@everyone`, `@here`, `<@id>`, `<@&id>`, `<#id>`)."""
    return _MENTION_RE.sub(lambda m: m.group(0) + ZWSP, text)


def safe_text(text: str) -> str:
    """Markdown-escaped, mention-free text for a message body or embed description."""
    escaped = discord.utils.escape_markdown(_strip_controls(text), ignore_links=False)
    return neutralize_mentions(escaped)


def safe_inline(text: str, limit: int = EMBED_TITLE_LIMIT) -> str:
    """`safe_text` on one line (file names, labels, titles), truncated to `limit`."""
    return truncate(safe_text(" ".join(text.split())), limit)


def safe_code_block(text: str, limit: int = EMBED_DESCRIPTION_LIMIT) -> str:
    """Text inside a code block that no backtick run in `text` can close early."""
    body = _strip_controls(text).replace("`", "`" + ZWSP)
    body = neutralize_mentions(body).strip("\n") or " "
    fence_len = len("```\n\n```")
    return "```\n" + truncate(body, limit - fence_len) + "\n```"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    if limit < 1:
        return ""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # A cut right after an escaping backslash would escape the ellipsis instead.
    if cut.endswith("\\") and not cut.endswith("\\\\"):
        cut = cut[:-1]
    return cut.rstrip() + ELLIPSIS


def legend(detections: Iterable[Detection]) -> str:
    """ "circle × 2, square × 1": most frequent first, then by label."""
    counts = Counter(d.label for d in detections)
    if not counts:
        return "Nothing found."
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{safe_inline(label, 60)} × {n}" for label, n in ordered)


def size_text(n: int) -> str:
    """ "10 MiB", "200 KiB": a byte limit as users read it."""
    return f"{n / (1024 * 1024):.0f} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def duration_text(seconds: float) -> str:
    """ "45 s", "12 min", "3 h 5 min": a wait or an age, roughly."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


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
    view: discord.ui.View | None = None  # follow-up buttons (bot.followups)

    def discord_files(self) -> list[discord.File]:
        return [f.to_discord() for f in self.files]


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """One image's result with what is needed to show it."""

    label: str
    result: JobResult
    # The picture kept in Redis (`bot.delivery`): boxes for a result without a display copy.
    image: bytes | None = None

    @property
    def needs_picture(self) -> bool:
        """Whether there are boxes with nothing yet to draw them on."""
        has_picture = self.result.display is not None or self.image is not None
        return self.result.ok and bool(self.result.detections) and not has_picture

    @property
    def drawable(self) -> bool:
        """Whether there are boxes and a picture to draw them on."""
        has_picture = self.result.display is not None or self.image is not None
        return self.result.ok and bool(self.result.detections) and has_picture


def _text_body(result: JobResult, budget: int) -> tuple[str, OutFile | None, str]:
    """(description, overflow file or None, short name of the task)."""
    task = result.task or Task.ANSWER
    text = result.text.strip()
    if not text:
        return _NO_TEXT.get(task, "(no answer)"), None, task.value
    if task is Task.OCR:
        full = safe_code_block(text, limit=len(text) * 3 + 16)
        body = full if len(full) <= budget else safe_code_block(text, budget)
    else:
        full = safe_text(text)
        body = full if len(full) <= budget else truncate(full, budget)
    overflow = None if body is full else OutFile(f"{task.value}.txt", text.encode())
    return body, overflow, task.value


def _boxes_file(item: ItemAnswer, n: int, max_bytes: int) -> OutFile:
    """The raw answer as JSON: boxes, and for segment masks as COCO RLE on the upload;
    cut to the first entries that fit `max_bytes` (a hostile result may hold thousands)."""
    result = item.result
    if result.task is not Task.SEGMENT:
        entries = [d.to_dict() for d in result.detections]
    elif result.display is None:  # a worker that sent no picture: boxes only
        entries = [{"label": d.label, "box": list(d.box), "mask": None} for d in result.detections]
    else:
        entries = segments_json(result.detections, result.display.original_size)
    lines: list[str] = []
    size = 4  # one entry a line: readable, and its size known as it grows
    for entry in entries:
        line = json.dumps(entry, ensure_ascii=False)
        size += len(line.encode()) + 2
        if size > max_bytes:
            break
        lines.append(line)
    return OutFile(_json_name(item, n), ("[\n" + ",\n".join(lines) + "\n]\n").encode())


def _json_name(item: ItemAnswer, n: int) -> str:
    return f"{'segments' if item.result.task is Task.SEGMENT else 'boxes'}-{n}.json"


def picture_for(item: ItemAnswer) -> LoadedImage | None:
    """The upright picture to draw `item`'s answer on, at display size: the worker's copy,
    else (a worker that sends none) the upload where a bounded reduced decode can read it;
    None when neither is at hand. Raises PalicordError for an unreadable picture."""
    display = item.result.display
    if display is not None:
        return LoadedImage(display.open(), display.original_size, "display")
    return None if item.image is None else reduced_picture(item.image)


def draw_boxes(
    picture: LoadedImage, detections: Sequence[Detection], max_bytes: int
) -> tuple[bytes, str]:
    """The engine's own drawing code on `picture` (boxes in its original's pixels):
    (encoded picture, file extension), PNG when it fits, else JPEG ("jpg"), shrunk as far
    as still useful. Raises ValueError when nothing fits `max_bytes`."""
    image = picture.image
    boxes = scale_detections(detections, picture.original_size, image.size)
    drawn = annotate(image, boxes, max_bytes=max_bytes)
    return drawn.data, drawn.extension


def _draw(item: ItemAnswer, n: int, max_bytes: int) -> tuple[OutFile | None, str]:
    """The marked-up picture, or None and a note saying why there is none."""
    json_name = _json_name(item, n)
    try:
        picture = picture_for(item)
        if picture is None:
            return (
                None,
                f"The picture is too large to draw on here; the boxes are in {json_name}.",
            )
        data, extension = draw_boxes(picture, item.result.detections, max_bytes)
    except ValueError:
        return None, (
            f"The picture with its boxes would not fit the {size_text(max_bytes)} upload "
            f"limit here; the boxes are in {json_name}."
        )
    except PalicordError as exc:
        log.info("could not draw detections: %s", exc.code)
        return None, f"I couldn't draw the boxes; they are in {json_name}."
    name = "masks" if item.result.task is Task.SEGMENT else "detections"
    return OutFile(f"{name}-{n}.{extension}", data), ""


def _detection(
    item: ItemAnswer, n: int, title: str | None, max_bytes: int, budget: int
) -> tuple[discord.Embed, OutFile | None]:
    """The legend embed (within `budget` characters) and, when it can be drawn within
    `max_bytes`, the marked-up picture."""
    notes: list[str] = []
    if note := item.result.context.get(NOTE_FIELD, ""):  # the worker's, e.g. "no decoder"
        notes.append(safe_text(note))
    drawn: OutFile | None = None
    if item.drawable:
        drawn, note = _draw(item, n, max_bytes)
        if note:
            notes.append(note)
    elif item.needs_picture:  # no display copy, and the kept picture is gone too
        notes.append(
            "The picture is no longer kept here, so nothing is drawn; "
            f"the boxes are in {_json_name(item, n)}."
        )
    tail = truncate("".join("\n\n" + note for note in notes), budget // 2)
    # Hundreds of distinct labels (a hostile or looping model) are cut, not the notes.
    description = truncate(legend(item.result.detections), budget - len(tail)) + tail
    embed = discord.Embed(title=title, description=description, colour=COLOUR_OK)
    if drawn is not None:
        embed.set_image(url=f"attachment://{drawn.filename}")
    return embed, drawn


def compose(items: Sequence[ItemAnswer], *, max_file_bytes: int) -> Answer:
    """The final message for `items` (one per image, in order); attached pictures together
    stay within `max_file_bytes`, the destination's upload limit."""
    multi = len(items) > 1
    drawable = sum(1 for i in items if i.drawable)
    # Discord states its limit per file; sharing it between a message's pictures keeps the
    # whole upload within it as well, and annotated pictures are rarely near the limit.
    pictures_bytes = max_file_bytes - max_file_bytes // _TEXT_FILES_SHARE
    text_bytes = max_file_bytes // _TEXT_FILES_SHARE // max(len(items), 1)
    per_image_bytes = pictures_bytes // max(drawable, 1)
    budget = min(
        EMBED_DESCRIPTION_LIMIT,
        (EMBED_TOTAL_LIMIT - _TITLE_RESERVE) // max(len(items), 1),
    )
    embeds: list[discord.Embed] = []
    files: list[OutFile] = []
    for n, item in enumerate(items[:MAX_EMBEDS], start=1):
        title = f"Image {n} · {safe_inline(item.label, 200)}" if multi else None
        result = item.result
        if not result.ok:
            error = result.exception()
            message = error.message if error is not None else "That request failed."
            # Error text crossed Redis from the worker: it must not ping either.
            description = truncate("⚠️ " + neutralize_mentions(message), budget)
            embeds.append(discord.Embed(title=title, description=description, colour=COLOUR_ERROR))
            continue
        if result.task is not None and result.task.draws:
            embed, drawn = _detection(item, n, title, per_image_bytes, budget)
            if drawn is not None:
                files.append(drawn)
            files.append(_boxes_file(item, n, text_bytes))
            embeds.append(embed)
            continue
        body, overflow, task = _text_body(result, budget)
        if overflow is not None:
            files.append(OutFile(f"{task}-{n}.txt" if multi else overflow.filename, overflow.data))
        embeds.append(discord.Embed(title=title, description=body, colour=COLOUR_OK))
    for embed, item in zip(embeds, items, strict=False):
        notes = [_frame_note(item.result.context.get(FRAME_FIELD, ""))]
        cached = item.result.context.get(FROM_CACHE) if item.result.ok else None
        if cached == SAME_ORIGIN:  # when it was asked elsewhere is not this server's to know
            notes.append(f"⚡ From the cache · answered {_ago(age_s(item.result))}")
        elif cached:
            notes.append("⚡ From the cache")
        if any(notes):
            embed.set_footer(text=" · ".join(n for n in notes if n))
    return Answer(embeds=tuple(embeds), files=tuple(files[:MAX_FILES]))


def _frame_note(value: str) -> str:
    """ "Animation: frame 12 of 24" from "12/24"; "" for anything else."""
    shown, _, frames = value.partition("/")
    if not (shown.isdigit() and frames.isdigit()):
        return ""
    return f"Animation: frame {int(shown)} of {int(frames)}"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 10 else duration_text(seconds) + " ago"
