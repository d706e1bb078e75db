"""The display copy: an upright, Discord-sized copy of a request's picture, made by the
worker while it decodes the picture anyway and sent back with the answers that are drawn
on it (detection boxes today), so the bot never decodes a full-size upload.

Torch-free; both programs import it. A 40-megapixel PNG decodes to 120-160 MB of pixels;
its display copy is at most DISPLAY_MAX_SIDE_PX on its long side (a few MB decoded, a few
hundred KB encoded). It travels inside `inference.queue.JobResult`, so a result and its
picture arrive, are stored and are cached together. Answers keep the coordinates of the
upload (`original_size`); `scale_detections` maps them onto the copy.

A worker that sends no copy (an older version, or an answer cached by one) leaves the bot
the upload itself: `reduced_picture` decodes it only where that costs bounded memory
(JPEG's draft mode decodes at 1/2, 1/4 or 1/8 scale; other formats only when small).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from PIL import Image

from inference.annotate import annotate
from inference.detection import Detection
from inference.errors import MalformedMessage
from inference.intake import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    LoadedImage,
    load_image,
    probe_image,
    reduce_towards,
    sniff_format,
)

MiB = 1024 * 1024
# Discord shows a picture at most ~550 px wide in a chat column and ~1,600 px when opened
# on a desktop screen; more only costs bytes in Redis and memory in the bot.
DISPLAY_MAX_SIDE_PX = 1600
# JPEG for photos (a 1,600 px photo at quality 90 is ~0.2-0.8 MB); PNG for other
# uploads when it fits (crisp screenshot text), else JPEG.
DISPLAY_MAX_BYTES = 1 * MiB
DISPLAY_JPEG_QUALITY = 90
# The bot refuses a copy with more pixels than a DISPLAY_MAX_SIDE_PX square: a worker bug
# or a forged result cannot make it decode more.
DISPLAY_MAX_PIXELS = DISPLAY_MAX_SIDE_PX * DISPLAY_MAX_SIDE_PX
# Without a copy, the bot decodes a JPEG only if that takes at most this many pixels
# after its draft reduction (RGB: ~30 MB; draft steps are powers of two, so this admits
# any JPEG whose long side is at most 16 times its short one), other formats half as
# many (RGBA composited onto RGB: 5 megapixels of PNG raise the peak by ~65 MB).
FALLBACK_MAX_DECODED_PIXELS = 4 * DISPLAY_MAX_PIXELS
_JPEG_DRAFT_SCALES = (8, 4, 2, 1)


@dataclass(frozen=True, slots=True)
class DisplayPicture:
    """An encoded, upright copy of an upload, sized for Discord."""

    data: bytes  # PNG or JPEG, long side at most DISPLAY_MAX_SIDE_PX
    original_size: tuple[int, int]  # the upright upload's (width, height): answers' pixels

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: the bytes in base64, and the original size."""
        return {
            "data": base64.b64encode(self.data).decode(),
            "original_size": list(self.original_size),
        }

    @classmethod
    def from_dict(cls, data: object) -> DisplayPicture:
        """Inverse of `to_dict`; raises MalformedMessage on anything else."""
        if not isinstance(data, Mapping):
            raise MalformedMessage("The display picture is not an object.")
        encoded, size = data.get("data"), data.get("original_size")
        # base64 is 4/3 of the bytes; the cap keeps a forged message from costing memory.
        if not isinstance(encoded, str) or len(encoded) > DISPLAY_MAX_BYTES * 4 // 3 + 4:
            raise MalformedMessage("The display picture's data is missing or too large.")
        if not isinstance(size, list) or len(size) != 2:
            raise MalformedMessage("The display picture's original size must be two numbers.")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
            raise MalformedMessage("The display picture's original size must be positive.")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessage("The display picture's data is not base64.") from exc
        return cls(data=raw, original_size=(size[0], size[1]))

    @classmethod
    def from_json_value(cls, value: object) -> DisplayPicture | None:
        """`from_dict` for an optional field: None (or absent) is no picture."""
        return None if value is None else cls.from_dict(value)

    def open(self) -> Image.Image:
        """The copy decoded; raises an ImageError if it is not a small, readable picture."""
        loaded = load_image(self.data, max_bytes=DISPLAY_MAX_BYTES, max_pixels=DISPLAY_MAX_PIXELS)
        return loaded.image


def fit_within(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE_PX) -> Image.Image:
    """`image` shrunk so that its long side is at most `max_side` (never enlarged)."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # A box filter first, down to twice the size, then Lanczos (as Image.thumbnail does):
    # a Lanczos pass over 40 megapixels alone takes half a second.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def display_picture(
    image: Image.Image, original_size: tuple[int, int], *, photo: bool = False
) -> DisplayPicture:
    """The display copy of an upright decoded picture whose upload was `original_size`;
    `photo`: the upload was a JPEG, so the copy is one too."""
    fitted = fit_within(image)
    if photo:
        # Encoding a photo as PNG costs several times the time and bytes, for nothing.
        out = io.BytesIO()
        fitted.save(out, "JPEG", quality=DISPLAY_JPEG_QUALITY, subsampling=0)
        if out.tell() <= DISPLAY_MAX_BYTES:
            return DisplayPicture(data=out.getvalue(), original_size=original_size)
    # annotate() with nothing to draw is the bot's own encoder: PNG when it fits, else
    # JPEG, shrunk until it is within the cap.
    encoded = annotate(fitted, (), max_bytes=DISPLAY_MAX_BYTES)
    return DisplayPicture(data=encoded.data, original_size=original_size)


def load_with_display(
    data: bytes,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    target_size: int,
) -> tuple[LoadedImage, DisplayPicture]:
    """What `load_image(data, target_size=...)` returns, with the same pixels, and the
    display copy; one decode except for a large JPEG, whose model input is decoded at
    a much smaller draft scale than the copy needs."""
    if sniff_format(data) != "JPEG":
        # Without draft mode load_image decodes in full and then reduces: do that once.
        full = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
        loaded = dataclasses.replace(full, image=reduce_towards(full.image, target_size))
        return loaded, display_picture(full.image, full.original_size)
    loaded = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels, target_size=target_size)
    if loaded.image.size == loaded.original_size:  # small: decoded in full, not reduced
        return loaded, display_picture(loaded.image, loaded.original_size, photo=True)
    # A second decode, at a larger draft scale (a 40-megapixel JPEG: 1/4 against the
    # model's 1/8): deriving the model's input from it instead would change the pixels
    # the vision tower sees, and its features are cached by picture, whatever the task.
    target = _display_target(loaded.original_size)
    big = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels, target_size=target)
    return loaded, display_picture(big.image, loaded.original_size, photo=True)


def _display_target(size: tuple[int, int]) -> int:
    # load_image's target_size is the short side it keeps: the short side of the picture
    # fitted to the display keeps the long side at DISPLAY_MAX_SIDE_PX or more.
    return max(1, -(-DISPLAY_MAX_SIDE_PX * min(size) // max(size)))


def reduced_picture(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> LoadedImage | None:
    """The upload decoded upright at display size (with its original size) where that
    takes at most FALLBACK_MAX_DECODED_PIXELS, None where it would take more; raises an
    ImageError for a bad picture."""
    info = probe_image(data, max_pixels=max_pixels)  # the header only
    target = _display_target((info.width, info.height))
    decoded, limit = info.width * info.height, FALLBACK_MAX_DECODED_PIXELS // 2
    if info.format == "JPEG":
        # The scale Pillow's JpegImageFile.draft picks for load_image(target_size=target).
        fits = min(info.width // target, info.height // target)
        scale = next(s for s in _JPEG_DRAFT_SCALES if fits >= s or s == 1)
        decoded = -(-info.width // scale) * -(-info.height // scale)
        limit = FALLBACK_MAX_DECODED_PIXELS
    if decoded > limit:
        return None
    loaded = load_image(data, max_pixels=max_pixels, target_size=target)
    return dataclasses.replace(loaded, image=fit_within(loaded.image))


def scale_detections(
    detections: Sequence[Detection], original_size: tuple[int, int], size: tuple[int, int]
) -> list[Detection]:
    """Boxes in the upload's pixels moved onto a copy of `size` pixels."""
    fx, fy = size[0] / original_size[0], size[1] / original_size[1]
    out = []
    for d in detections:
        x0, y0, x1, y1 = d.box
        box = (round(x0 * fx), round(y0 * fy), round(x1 * fx), round(y1 * fy))
        out.append(Detection(d.label, box, d.mask))
    return out
