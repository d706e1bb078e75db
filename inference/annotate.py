"""Draw detection boxes (and segment masks) with their labels onto an image, encoded to
fit a Discord upload.

Torch-free. Boxes are in the pixel coordinates of the image passed in (the original-size
upload), which is also the size drawn, unless the byte cap forces a smaller copy. A
segment's 64×64 mask is resized into its box at the size drawn, never before.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from inference.detection import Detection
from inference.errors import MalformedMessage
from inference.intake import to_rgb
from inference.segmentation import MAX_SEGMENTS, decode_mask, mask_in_box

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

# Discord's per-file upload limit outside boosted servers (boosted ones allow more: the bot
# reads each destination's own limit from Discord and passes it as `max_bytes`).
DISCORD_UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024
# Twelve colours that stay apart from each other and from most photo backgrounds
# (from Sasha Trubetskoy's "20 simple, distinct colours").
PALETTE: tuple[RGB, ...] = (
    (230, 25, 75),  # red
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (0, 130, 200),  # blue
    (245, 130, 48),  # orange
    (145, 30, 180),  # purple
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (250, 190, 212),  # pink
    (0, 128, 128),  # teal
    (170, 110, 40),  # brown
)
JPEG_QUALITY = 90
MAX_ENCODE_ATTEMPTS = 8
MIN_SIDE_PX = 32  # below this an annotated image is useless; give up instead
PNG_SAMPLE_TILE_PX = 128
PNG_SAMPLE_GRID = 3  # 3 x 3 tiles: a 147-kpx sample, a few ms to encode
PNG_ESTIMATE_SLACK = 1.25  # try PNG unless the sample predicts well over the cap
MASK_OPACITY = 0.45  # the picture stays visible under a mask
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)
_ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class AnnotatedImage:
    """An encoded annotated image, ready to upload."""

    data: bytes
    format: str  # "PNG" or "JPEG"
    size: tuple[int, int]

    @property
    def extension(self) -> str:
        return "png" if self.format == "PNG" else "jpg"


def _color_key(label: str) -> str:
    return " ".join(label.casefold().split())


def _palette_index(label: str) -> int:
    # hashlib, not hash(): str hashes are salted per process, and the same label should
    # keep its colour across worker restarts and between the bot and the worker.
    digest = hashlib.blake2b(_color_key(label).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(PALETTE)


def label_color(label: str) -> RGB:
    """The palette colour for a label: the same in every process, case-insensitive."""
    return PALETTE[_palette_index(label)]


def assign_colors(labels: Iterable[str]) -> dict[str, RGB]:
    """Colours for the labels of one image: each label's own colour unless an earlier
    label took it, so up to len(PALETTE) labels in one picture never share a colour."""
    labels = list(labels)
    keys = sorted({_color_key(label) for label in labels})
    taken: dict[str, int] = {}
    used: set[int] = set()
    for key in keys:  # sorted, so the result does not depend on detection order
        if len(used) == len(PALETTE):
            used.clear()
        index = _palette_index(key)
        while index in used:
            index = (index + 1) % len(PALETTE)
        used.add(index)
        taken[key] = index
    return {label: PALETTE[taken[_color_key(label)]] for label in labels}


def text_color(background: RGB) -> RGB:
    """Black or white, whichever contrasts more with `background` (WCAG luminance)."""

    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # Contrast against black is (L + 0.05) / 0.05, against white 1.05 / (L + 0.05).
    return _BLACK if (luminance + 0.05) ** 2 > 0.05 * 1.05 else _WHITE


@functools.lru_cache(maxsize=32)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled Aileron (Latin only); without FreeType, a fixed-size bitmap font.
    return ImageFont.load_default(size=size_px)


def _fit_text(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    # Bisect for the longest prefix that fits with the ellipsis (labels from a queue
    # message can be long); at least one character survives.
    low, high = 1, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if font.getlength(text[:mid] + _ELLIPSIS) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + _ELLIPSIS


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def place_tag(
    box_origin: tuple[int, int], tag_size: tuple[int, int], image_size: tuple[int, int]
) -> tuple[int, int]:
    """Top-left corner for a label tag: above the box's top-left corner when there is
    room, else just inside its top edge; always shifted to lie within the image."""
    (x0, y0), (tag_w, tag_h), (width, height) = box_origin, tag_size, image_size
    tag_y = y0 - tag_h if y0 >= tag_h else y0
    return _clamp(x0, 0, max(0, width - tag_w)), _clamp(tag_y, 0, max(0, height - tag_h))


def draw_detections(image: Image.Image, detections: Sequence[Detection]) -> Image.Image:
    """A copy of `image` (as RGB) with each box outlined and labelled in its colour."""
    out = to_rgb(image).copy()
    width, height = out.size
    short_side = min(width, height)
    # Sized to the image so that, once Discord shrinks it to fit a chat column, lines
    # and labels look about the same on a phone snapshot and a 24-Mpx photo.
    line_px = max(2, round(short_side / 160))
    font_px = max(11, round(short_side / 28))
    font = _font(font_px)
    pad = max(2, font_px // 4)
    tag_h = font_px + 2 * pad

    colors = assign_colors(d.label for d in detections)
    # A worker sends at most MAX_SEGMENTS masks; past that (a hostile result) only boxes.
    masked = {
        i
        for i, det in enumerate(detections[:MAX_SEGMENTS])
        if _draw_mask(out, det, colors, line_px)
    }
    draw = ImageDraw.Draw(out)
    boxes: list[tuple[int, int, int, int]] = []
    for i, det in enumerate(detections):
        x0, y0, x1, y1 = det.box
        # Box edges are pixel boundaries; the outline is drawn on the pixels inside them.
        x0, y0 = _clamp(x0, 0, width - 1), _clamp(y0, 0, height - 1)
        x1, y1 = _clamp(x1 - 1, x0, width - 1), _clamp(y1 - 1, y0, height - 1)
        boxes.append((x0, y0, x1, y1))
        if i in masked:  # its mask's outline stands for the box
            continue
        # A one-pixel dark rim on both sides keeps the line visible on its own colour.
        draw.rectangle((x0, y0, x1, y1), outline=_BLACK, width=line_px + 2)
        inner = (x0 + 1, y0 + 1, max(x0 + 1, x1 - 1), max(y0 + 1, y1 - 1))
        draw.rectangle(inner, outline=colors[det.label], width=line_px)

    # Tags go on after every outline, so no box is drawn across another box's label.
    for det, (x0, y0, x1, _) in zip(detections, boxes, strict=True):
        color = colors[det.label]
        # A long label may run past its box, but not across half the picture.
        max_text_w = min(width, max(x1 - x0 + 1, width // 2)) - 2 * pad
        # One line: a newline would make Pillow lay out (and refuse to anchor) a block.
        text = _fit_text(" ".join(det.label.split()), font, max_text_w)
        tag_w = math.ceil(font.getlength(text)) + 2 * pad
        tag_x, tag_y = place_tag((x0, y0), (tag_w, tag_h), (width, height))
        draw.rectangle(
            (tag_x, tag_y, tag_x + tag_w - 1, tag_y + tag_h - 1), fill=color, outline=_BLACK
        )
        draw.text(
            (tag_x + pad, tag_y + tag_h / 2), text, fill=text_color(color), font=font, anchor="lm"
        )
    return out


def _draw_mask(out: Image.Image, det: Detection, colors: dict[str, RGB], line_px: int) -> bool:
    """Fill `det`'s mask semi-transparently in its colour and outline it; False when it has
    no usable mask (none, or one that does not unpack: its box is drawn instead)."""
    if det.mask is None:
        return False
    try:
        mask = decode_mask(det.mask)
    except MalformedMessage:
        return False
    left, top, inside = mask_in_box(mask, det.box, out.size)
    if inside is None or inside.getbbox() is None:
        return False
    crop = (left, top, left + inside.width, top + inside.height)
    tinted = Image.new("RGB", inside.size, colors[det.label])
    alpha = inside.point(lambda v: round(v * MASK_OPACITY))
    out.paste(Image.composite(tinted, out.crop(crop), alpha), crop)
    # The outline: the mask less its erosion, widened like a box's line, with a dark rim.
    ring = ImageChops.subtract(inside, inside.filter(ImageFilter.MinFilter(3)))
    size = 2 * (line_px // 2) + 1
    out.paste(_BLACK, crop, ring.filter(ImageFilter.MaxFilter(size + 2)))
    out.paste(colors[det.label], crop, ring.filter(ImageFilter.MaxFilter(size)))
    return True


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        # zlib level 1 is several times faster than the default 6 on photos and costs
        # only some percent in size; the bot is waiting for this.
        image.save(buf, "PNG", compress_level=1)
    else:
        # 4:4:4 keeps thin coloured lines and tag text from bleeding into the photo.
        image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _png_may_fit(image: Image.Image, max_bytes: int) -> bool:
    # Encoding a 12-Mpx photo as PNG takes seconds only to overshoot the cap, while a
    # screenshot of the same size fits easily. Tiles from across the image, encoded
    # alone, tell the two apart for a few milliseconds.
    width, height = image.size
    if width * height <= PNG_SAMPLE_TILE_PX**2 * PNG_SAMPLE_GRID**2:
        return True
    tile_w, tile_h = min(width, PNG_SAMPLE_TILE_PX), min(height, PNG_SAMPLE_TILE_PX)
    strip = Image.new("RGB", (tile_w * PNG_SAMPLE_GRID**2, tile_h))
    for i in range(PNG_SAMPLE_GRID**2):
        col, row = divmod(i, PNG_SAMPLE_GRID)
        x = (2 * col + 1) * width // (2 * PNG_SAMPLE_GRID) - tile_w // 2
        y = (2 * row + 1) * height // (2 * PNG_SAMPLE_GRID) - tile_h // 2
        x, y = _clamp(x, 0, width - tile_w), _clamp(y, 0, height - tile_h)
        strip.paste(image.crop((x, y, x + tile_w, y + tile_h)), (i * tile_w, 0))
    estimate = len(_encode(strip, "PNG")) * (width * height) / (strip.width * strip.height)
    return estimate <= PNG_ESTIMATE_SLACK * max_bytes


def _scaled(det: Detection, fx: float, fy: float) -> Detection:
    x0, y0, x1, y1 = det.box
    box = (round(x0 * fx), round(y0 * fy), round(x1 * fx), round(y1 * fy))
    return Detection(det.label, box, det.mask)


def annotate(
    image: Image.Image,
    detections: Sequence[Detection],
    *,
    max_bytes: int = DISCORD_UPLOAD_LIMIT_BYTES,
) -> AnnotatedImage:
    """Draw detections and encode as PNG, else JPEG, shrinking until under `max_bytes`."""
    base = to_rgb(image)
    drawn = draw_detections(base, detections)
    if _png_may_fit(drawn, max_bytes):
        data = _encode(drawn, "PNG")
        if len(data) <= max_bytes:
            return AnnotatedImage(data=data, format="PNG", size=drawn.size)
    scale = 1.0
    for _ in range(MAX_ENCODE_ATTEMPTS):
        data = _encode(drawn, "JPEG")
        if len(data) <= max_bytes:
            return AnnotatedImage(data=data, format="JPEG", size=drawn.size)
        # Encoded size grows roughly with the pixel count, hence the square root.
        scale *= min(0.9, max(0.3, 0.9 * math.sqrt(max_bytes / len(data))))
        size = (round(base.width * scale), round(base.height * scale))
        if min(size) < MIN_SIDE_PX:
            break
        log.info("annotated image is %d bytes; redrawing at %dx%d", len(data), *size)
        # Redraw rather than shrink the drawing, so labels stay crisp at the smaller size.
        fx, fy = size[0] / base.width, size[1] / base.height
        small = base.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        drawn = draw_detections(small, [_scaled(d, fx, fy) for d in detections])
    raise ValueError(f"cannot encode the annotated image in {max_bytes} bytes")
