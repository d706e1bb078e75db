"""Safe image intake: sniff the format, refuse bombs before decoding, decode to upright RGB.

Torch-free. The bot calls `probe_image` before queuing a job (header and structure only,
cheap: `inference.structure`); the worker calls `load_image`. Pillow's exceptions are
translated here, once, into the typed errors of `inference.errors`, whose messages can be
shown to a Discord user as they are.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import ExifTags, Image

from inference.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    ImageTooManyPixels,
    NotAnImage,
    UnsupportedImageFormat,
)
from inference.structure import walk

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# The image limits, defined here once: the defaults of the MAX_IMAGE_BYTES and
# MAX_IMAGE_PIXELS settings (`inference.queue.settings.ImageLimits`) that both programs use.
# 20 MiB also bounds the Redis memory an image takes while its job waits.
MAX_IMAGE_BYTES = 20 * MiB
MAX_IMAGE_PIXELS = 40_000_000
# Decoded images keep at most this multiple of the model's input side: the processor
# squashes to a square anyway, and doing the big reduction here with a good filter keeps
# its last, cheaper resize from aliasing.
DOWNSCALE_MARGIN = 2
# An animation is answered about one frame, its middle one: first frames are often blank,
# a fade-in or a title card, the middle is where the action is. Frame k of a GIF, APNG or
# animated WebP is drawn over the frames before it, so reaching it means decoding k
# canvases; the frame chosen stops short of the middle when that would cost more than
# decoding the largest still picture accepted (MAX_IMAGE_PIXELS). A 480 × 270 GIF still
# reaches its middle frame up to about 600 frames long.
MAX_ANIMATION_DECODE_PIXELS = 40_000_000

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_ORIENTATION = ExifTags.Base.Orientation
# The table ImageOps.exif_transpose uses; applied by hand because only pixels leave this
# module, so rewriting the EXIF and XMP blocks afterwards would be wasted work.
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's decoders raise on hostile or damaged input.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)

# Formats people do send, named so the refusal can say what was wrong.
_UNSUPPORTED_MAGIC = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "Photoshop (PSD)"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}
_BMP_HEADER_SIZES = frozenset(struct.pack("<I", n) for n in (12, 40, 52, 56, 64, 108, 124))


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the header says; width and height as stored, before EXIF orientation."""

    format: str
    width: int
    height: int
    frames: int

    @property
    def shown_frame(self) -> int:
        """The 1-based frame `load_image` decodes (see `representative_frame`)."""
        return representative_frame(self.frames, self.width, self.height)


def representative_frame(frames: int, width: int, height: int) -> int:
    """The 1-based frame an animation of `frames` frames is answered about: the middle
    one, or the furthest towards it that decoding MAX_ANIMATION_DECODE_PIXELS reaches.
    The bot (to say which frame) and the worker (to decode it) both call this."""
    if frames <= 1:
        return 1
    affordable = MAX_ANIMATION_DECODE_PIXELS // max(1, width * height)
    return max(1, min((frames + 1) // 2, affordable))


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An upright RGB image, possibly reduced, and the upright size of the original."""

    image: Image.Image
    original_size: tuple[int, int]
    format: str
    frame: int = 1  # the 1-based frame of an animation decoded
    frames: int = 1


def sniff_format(data: bytes) -> str:
    """Pillow's name for the format the magic bytes announce; refuse anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    # "BM" alone is too weak (any text may start with it): also require a known DIB size.
    if data.startswith(b"BM") and data[14:18] in _BMP_HEADER_SIZES:
        return "BMP"
    name = _unsupported_name(data)
    if name is not None:
        raise UnsupportedImageFormat(
            f"{name} images are not supported. Please send PNG, JPEG, GIF, WebP or BMP."
        )
    raise NotAnImage()


def _unsupported_name(data: bytes) -> str | None:
    for magic, name in _UNSUPPORTED_MAGIC:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12])
    head = data[:512].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def _format_bytes(n: int) -> str:
    value, unit = (n / MiB, "MB") if n >= MiB else (n / 1024, "KB")
    return f"{value:.1f}".rstrip("0").rstrip(".") + f" {unit}"


def _format_mpx(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f}".rstrip("0").rstrip(".") + " megapixels"


def _check_bytes(data: bytes, max_bytes: int) -> str:
    if not data:
        raise EmptyImage()
    if len(data) > max_bytes:
        raise ImageTooLarge(
            f"That file is {_format_bytes(len(data))}; the limit is {_format_bytes(max_bytes)}."
        )
    return sniff_format(data)


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooManyPixels(
            f"That image is {width:,} × {height:,} pixels ({_format_mpx(width * height)}); "
            f"the limit is {_format_mpx(max_pixels)}."
        )


@contextmanager
def _pillow_boundary(max_pixels: int) -> Iterator[None]:
    """Translate what Pillow raises into our errors."""
    # Warnings are left to the process's filters: catch_warnings would swap global state
    # under the bot's worker threads. Where filters turn warnings into exceptions, the
    # ones Pillow emits for hostile files are translated like any decoder error.
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooManyPixels(
            f"That image has far too many pixels; the limit is {_format_mpx(max_pixels)}."
        ) from exc
    except (*_DECODE_ERRORS, UserWarning) as exc:
        raise CorruptImage() from exc


def _open(data: bytes, fmt: str, max_pixels: int) -> Image.Image:
    # `formats=` keeps Pillow from trying its other ~40 parsers on bytes we already sniffed.
    img = Image.open(io.BytesIO(data), formats=[fmt])
    if img.width < 1 or img.height < 1:  # Pillow refuses these today; later code divides
        raise CorruptImage()
    _check_pixels(img.size, max_pixels)
    return img


def probe_image(
    data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> ImageInfo:
    """Check format, byte and pixel caps from the header alone, without decoding pixels."""
    fmt = _check_bytes(data, max_bytes)
    # Refuses files cut off before their picture ends, or too costly to decode; counts
    # frames without Pillow's n_frames, which seeks through every frame of a GIF.
    structure = walk(data, fmt)
    with _pillow_boundary(max_pixels):
        img = _open(data, fmt, max_pixels)
        return ImageInfo(format=fmt, width=img.width, height=img.height, frames=structure.frames)


def load_image(
    data: bytes,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    target_size: int | None = None,
) -> LoadedImage:
    """Decode to upright RGB, reduced towards `target_size` if given; an animation's
    `representative_frame`."""
    if target_size is not None and target_size < 1:
        raise ValueError(f"target_size must be positive, got {target_size}")
    fmt = _check_bytes(data, max_bytes)
    # Also here, not only in the bot: Pillow refuses truncated files only while
    # ImageFile.LOAD_TRUNCATED_IMAGES is False, a process-wide switch any library may flip.
    frames = walk(data, fmt).frames
    with _pillow_boundary(max_pixels):
        img = _open(data, fmt, max_pixels)
        width, height = img.size
        frame = representative_frame(frames, width, height)
        if frame > 1:
            # Pillow seeks frame by frame; a frame the structure counted but Pillow cannot
            # reach raises EOFError, refused as corrupt like any damaged picture.
            img.seek(frame - 1)
        if fmt == "JPEG" and target_size is not None:
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale for a fraction of the work; draft
            # picks the largest reduction that keeps both sides >= target_size.
            img.draft("RGB", (target_size, target_size))
        img.load()
        orientation = _orientation(img)
        transpose = _TRANSPOSE_FOR_ORIENTATION.get(orientation)
        if transpose is not None:
            img = img.transpose(transpose)
        if orientation in (5, 6, 7, 8):  # the quarter turns
            width, height = height, width
        rgb = to_rgb(img)
    if target_size is not None:
        rgb = reduce_towards(rgb, target_size)
    return LoadedImage(
        image=rgb, original_size=(width, height), format=fmt, frame=frame, frames=frames
    )


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except _DECODE_ERRORS as exc:
        # A damaged EXIF block should not cost the user their picture.
        log.info("ignoring unreadable EXIF: %s", exc)
        return 1
    return value if isinstance(value, int) else 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited over white."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        # Map 16-bit samples 0..65535 onto 0..255 rather than clipping them at 255. A
        # 32-bit "I" image has no declared depth; treat it as 16-bit if it exceeds 8.
        wide = img.mode != "I" or _max_sample(img) > 255
        scale = 1 / 256 if wide else 1
        img = img.convert("I").point(lambda v: v * scale, "L")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _max_sample(img: Image.Image) -> float:
    high = img.getextrema()[1]
    return high if isinstance(high, int | float) else 0


def reduce_towards(img: Image.Image, target_size: int) -> Image.Image:
    """`img` reduced as `load_image` reduces it for a model input of `target_size`."""
    width, height = img.size
    # Fit the long side in DOWNSCALE_MARGIN * target, but never take the short side below
    # target: a panorama still gets target_size rows of real detail.
    scale = max(
        DOWNSCALE_MARGIN * target_size / max(width, height), target_size / min(width, height)
    )
    if scale >= 1:
        return img
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
