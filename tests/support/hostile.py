"""Hostile and unusual pictures, generated (never shipped): shared by the tests and by
`bench/hostile.py`."""

from __future__ import annotations

import io
import random

from PIL import Image


def progressive_jpeg(size: tuple[int, int], *, quality: int = 80, seed: int = 5) -> bytes:
    """A progressive JPEG of coloured noise blocks (cheap to encode, real scans to decode)."""
    rng = random.Random(seed)
    small = Image.new("RGB", (max(1, size[0] // 16), max(1, size[1] // 16)))
    small.putdata(
        [
            (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            for _ in range(small.width * small.height)
        ]
    )
    picture = small.resize(size, Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, progressive=True)
    return out.getvalue()


def repeated_scans(jpeg: bytes, extra_scans: int) -> bytes:
    """`jpeg` with its last scan (its DHT tables, SOS header and entropy data) repeated:
    still a valid JPEG, a few KB per extra scan, but each scan is another decoding pass
    over every coefficient of the picture (the decode bomb of issue 19)."""
    last_sos = jpeg.rindex(b"\xff\xda")
    eoi = jpeg.rindex(b"\xff\xd9")
    return jpeg[:eoi] + jpeg[last_sos:eoi] * extra_scans + jpeg[eoi:]


def with_trailer(picture: bytes, size: int, *, seed: int = 3) -> bytes:
    """`picture` followed by `size` random bytes, as a motion photo carries its video."""
    rng = random.Random(seed)
    return picture + b"\x00\x00\x00\x18ftypmp42" + rng.randbytes(size)


def png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def animation(fmt: str, frames: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A GIF, APNG or WebP animation of `frames` frames of alternating colours."""
    images = [Image.new("RGB", size, (i * 37 % 256, 90, 200 - i % 150)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, fmt, save_all=True, append_images=images[1:], duration=40, loop=0)
    return out.getvalue()
