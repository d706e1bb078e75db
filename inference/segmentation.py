"""PaliGemma segmentation output to segments, their masks carried compactly, and COCO RLE.

Torch-free (the bot imports it to draw masks and write RLE). Each object in the model's
answer is 4 loc tokens (y1 x1 y2 x2), 16 `<segNNN>` codes and a label, objects separated
by " ; ". The worker decodes the codes to a 64×64 mask (`inference.engine.masks`) that
covers exactly the box; here it travels as 64×64 bytes (zlib, base64: a few hundred
characters) and is resized into the box only where it is drawn or written out, so no
full-size raster ever crosses the queue. Like detection's, the parser never raises on what
the model wrote: hostile or cut-off text yields fewer segments, never an error.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from inference.detection import LOC_BINS, MAX_MASK_CHARS, Detection, clean_label, loc_to_px
from inference.errors import MalformedMessage

MASK_SIZE = 64
CODES_PER_MASK = 16
CODEBOOK_SIZE = 128
# A real answer names a few objects; a model looping on "; <loc>…" must not make the
# worker decode, or the bot draw, hundreds of masks.
MAX_SEGMENTS = 16
MAX_LABEL_CHARS = 100

_LOC = r"<loc([0-9]{1,8})>\s*"
_OBJECT_RE = re.compile(_LOC * 4 + r"((?:<seg[0-9]{1,8}>\s*)*)([^<;]*)")
_SEG_RE = re.compile(r"<seg([0-9]{1,8})>")
# Other special tokens (<eos>, <pad>, ...) are noise; loc and seg tokens are structure.
_OTHER_TOKEN_RE = re.compile(r"<(?!loc|seg)[A-Za-z_][A-Za-z0-9_]{0,30}>")


@dataclass(frozen=True, slots=True)
class ParsedSegment:
    """One object of a segment answer: label, pixel box (x0, y0, x1, y1) of the original
    picture, and its 16 codes (None: the model gave no valid code group, so no mask)."""

    label: str
    box: tuple[int, int, int, int]
    codes: tuple[int, ...] | None


def _codes(group: str) -> tuple[int, ...] | None:
    values = [int(v) for v in _SEG_RE.findall(group)]
    if len(values) != CODES_PER_MASK or any(v >= CODEBOOK_SIZE for v in values):
        return None
    return tuple(values)


def parse_segments(text: str, width: int, height: int) -> list[ParsedSegment]:
    """Parse `segment` output; objects with a bad box are skipped, bad codes drop the mask."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    text = _OTHER_TOKEN_RE.sub(" ", text)
    out: list[ParsedSegment] = []
    for match in _OBJECT_RE.finditer(text):
        y1, x1, y2, x2 = (int(g) for g in match.groups()[:4])
        # Unlike detect's parser this one does not sort the corners: the mask is laid out
        # from (y1, x1) to (y2, x2), and an inverted box would draw it mirrored.
        if max(y1, x1, y2, x2) >= LOC_BINS or y2 <= y1 or x2 <= x1:
            continue
        box = (
            loc_to_px(x1, width),
            loc_to_px(y1, height),
            loc_to_px(x2, width),
            loc_to_px(y2, height),
        )
        label = clean_label(match.group(6))[:MAX_LABEL_CHARS]
        out.append(ParsedSegment(label, box, _codes(match.group(5))))
        if len(out) == MAX_SEGMENTS:
            break
    return out


def pack_mask(levels: Image.Image) -> str:
    """A 64×64 "L" mask (128 standing for the decoder's 0, foreground above) as compact
    text for the queue: zlib, base64; a few hundred characters for a real mask."""
    if levels.mode != "L" or levels.size != (MASK_SIZE, MASK_SIZE):
        raise ValueError(f"a mask is a {MASK_SIZE}x{MASK_SIZE} L image, got {levels}")
    return base64.b64encode(zlib.compress(levels.tobytes(), 9)).decode()


def decode_mask(text: str) -> Image.Image:
    """Inverse of `pack_mask`. Raises MalformedMessage."""
    if len(text) > MAX_MASK_CHARS:
        raise MalformedMessage("A segment mask is too long.")
    try:
        packed = base64.b64decode(text, validate=True)
        inflate = zlib.decompressobj()
        # Bounded: a small hostile stream may inflate to gigabytes.
        raw = inflate.decompress(packed, MASK_SIZE * MASK_SIZE + 1)
    except (binascii.Error, ValueError, zlib.error) as exc:
        raise MalformedMessage("A segment mask is not valid.") from exc
    if len(raw) != MASK_SIZE * MASK_SIZE:
        raise MalformedMessage("A segment mask must be 64x64.")
    return Image.frombytes("L", (MASK_SIZE, MASK_SIZE), raw)


def mask_in_box(
    mask: Image.Image, box: Sequence[int], size: tuple[int, int]
) -> tuple[int, int, Image.Image | None]:
    """The mask resized bilinearly into `box` (x0, y0, x1, y1) on a picture of `size`
    (width, height) and cut to the picture: (left, top, region of 255 inside, 0 outside),
    or None where the box misses the picture."""
    width, height = size
    x0, y0, x1, y1 = (int(v) for v in box)
    left, top = max(x0, 0), max(y0, 0)
    right, bottom = min(x1, width), min(y1, height)
    if right <= left or bottom <= top or x1 <= x0 or y1 <= y0:
        return 0, 0, None
    # Only the part inside the picture is resized (the box's corners may lie anywhere a
    # hostile result puts them), sampled as if the whole box had been, so a box partly
    # outside keeps the mask's proportions. One byte a pixel, and no numpy: the bot
    # draws with this.
    fx, fy = MASK_SIZE / (x1 - x0), MASK_SIZE / (y1 - y0)
    source = ((left - x0) * fx, (top - y0) * fy, (right - x0) * fx, (bottom - y0) * fy)
    region = mask.resize((right - left, bottom - top), Image.Resampling.BILINEAR, box=source)
    return left, top, region.point(lambda v: 255 if v >= 128 else 0)


_RUN_RE = re.compile(rb"\xff+")


def rle_encode(mask: Image.Image, box: Sequence[int], size: tuple[int, int]) -> dict[str, object]:
    """COCO uncompressed RLE of the mask placed in `box` on the whole picture: runs over
    pixels in column-major order, starting with a background run (0 when the first pixel
    is foreground). Built from the box's region alone, never a full-size raster."""
    width, height = size
    left, top, region = mask_in_box(mask, box, size)
    counts: list[int] = []
    position = 0  # in the whole picture, column-major
    if region is not None:
        rows = region.height
        # Transposed, the region's bytes run down each column in turn; a C-speed scan
        # finds the foreground runs, each cut where it crosses into the next column.
        data = region.transpose(Image.Transpose.TRANSPOSE).tobytes()
        for match in _RUN_RE.finditer(data):
            start, end = match.span()
            while start < end:
                column, row = divmod(start, rows)
                stop = min(end, (column + 1) * rows)
                begin = (left + column) * height + top + row
                if counts and begin == position:  # continues the last run (full-height box)
                    counts[-1] += stop - start
                else:
                    counts += [begin - position, stop - start]
                position = begin + stop - start
                start = stop
    if position < width * height:
        counts.append(width * height - position)
    return {"size": [height, width], "counts": counts}


def segments_json(segments: Sequence[Detection], size: tuple[int, int]) -> list[dict[str, object]]:
    """Segments as users get them (the CLI's output, the bot's JSON file): label, box
    [x0, y0, x1, y1] and mask as COCO RLE on the whole picture of `size` (width, height),
    or None where there is no mask or it does not unpack (or past MAX_SEGMENTS)."""
    out: list[dict[str, object]] = []
    for n, segment in enumerate(segments):
        rle = None
        # More than a worker ever sends (MAX_SEGMENTS) is not worth a raster scan each.
        if segment.mask is not None and n < MAX_SEGMENTS:
            with contextlib.suppress(MalformedMessage):  # a bad mask: the box alone
                rle = rle_encode(decode_mask(segment.mask), segment.box, size)
        out.append({"label": segment.label, "box": list(segment.box), "mask": rle})
    return out
