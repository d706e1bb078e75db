"""Pictures judged by their structure: trailers (motion photos) accepted, files cut off
before their picture ends refused, and pictures too costly to decode refused before any
decoder runs. The trailer and cap tests fail on the marker search this module replaced."""

from __future__ import annotations

import contextlib
import io
import random

import pytest
from PIL import Image

from inference import structure
from inference.errors import CorruptImage, ImageTooComplex
from inference.intake import load_image, probe_image
from inference.structure import MAX_JPEG_SCANS, walk
from tests.support.hostile import animation, png, progressive_jpeg, repeated_scans, with_trailer


def _noise(fmt: str, size: tuple[int, int] = (48, 32), **params: object) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(out, fmt, **params)
    return out.getvalue()


def test_motion_photos_are_read_whatever_their_video_holds() -> None:
    """The old check searched the file's tail for an SOS marker: about half of random
    300 KB trailers hold the bytes FF DA somewhere after the last FF D9, and were refused."""
    jpeg = _noise("JPEG")
    for seed in range(40):
        data = with_trailer(jpeg, 300_000, seed=seed)
        assert probe_image(data).format == "JPEG"
        assert load_image(data).image.size == (48, 32)
        assert walk(data, "JPEG").end == len(jpeg)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP"])
def test_other_formats_with_data_after_their_end_are_read(fmt: str) -> None:
    picture = _noise(fmt)
    data = with_trailer(picture, 50_000)
    assert load_image(data).image.size == (48, 32)
    assert walk(data, fmt).end == len(picture)


def test_a_jpeg_thumbnail_inside_exif_does_not_end_the_picture() -> None:
    """The EXIF block embeds a whole JPEG (its own SOS and EOI); jumping over segments by
    their length keeps the walk from stopping at the thumbnail's end."""
    thumb = _noise("JPEG", (16, 16))
    exif = Image.Exif()
    exif[0x0112] = 1
    body = exif.tobytes()
    app1 = b"\xff\xe1" + (len(body) + 2 + len(thumb)).to_bytes(2, "big") + body + thumb
    jpeg = _noise("JPEG")
    data = jpeg[:2] + app1 + jpeg[2:]
    assert walk(data, "JPEG").end == len(data)
    cut = data[: len(data) - 200]  # the main picture cut off; the thumbnail whole
    with pytest.raises(CorruptImage, match="incomplete"):
        walk(cut, "JPEG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_files_cut_off_before_their_picture_ends_are_incomplete(fmt: str) -> None:
    data = _noise(fmt, (64, 64))
    for cut in (len(data) // 3, len(data) * 3 // 4, len(data) - 2):
        with pytest.raises(CorruptImage, match="incomplete"):
            probe_image(data[:cut])
        with pytest.raises(CorruptImage, match="incomplete"):
            load_image(data[:cut])


def test_progressive_scans_are_counted() -> None:
    jpeg = progressive_jpeg((64, 64))
    assert walk(jpeg, "JPEG").scans == 10  # libjpeg's progressive script
    assert walk(_noise("JPEG"), "JPEG").scans == 1  # baseline


def test_a_scan_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode bomb of issue 19 (a progressive JPEG whose last scan repeats thousands of
    times) passes every header check; its scans give it away without decoding."""
    bomb = repeated_scans(progressive_jpeg((6000, 6000)), 5_000)
    assert len(bomb) < 1_000_000

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the decoder ran")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    for check in (probe_image, load_image):
        with pytest.raises(ImageTooComplex, match=f"more than {MAX_JPEG_SCANS} scans"):
            check(bomb)


def test_scans_up_to_the_cap_are_fine() -> None:
    jpeg = progressive_jpeg((64, 64))
    at_cap = repeated_scans(jpeg, MAX_JPEG_SCANS - 10)
    assert load_image(at_cap).image.size == (64, 64)
    with pytest.raises(ImageTooComplex):
        walk(repeated_scans(jpeg, MAX_JPEG_SCANS - 9), "JPEG")


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_frames_are_counted_and_capped(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = animation(fmt, 6)
    assert walk(data, fmt).frames == 6
    assert probe_image(data).frames == 6
    monkeypatch.setattr(structure, "MAX_FRAMES", 5)
    with pytest.raises(ImageTooComplex, match="frames"):
        probe_image(data)


def test_a_png_of_countless_chunks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    base = png((8, 8))
    chunk = b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00"  # empty text chunks (CRC not checked here)
    data = base[:33] + chunk * 50 + base[33:]
    assert walk(data, "PNG").end == len(data)
    monkeypatch.setattr(structure, "MAX_PNG_CHUNKS", 40)
    with pytest.raises(ImageTooComplex, match="chunks"):
        walk(data, "PNG")


def test_a_gif_without_its_trailer_byte_keeps_its_frames() -> None:
    data = animation("GIF", 3)
    assert data.endswith(b";")
    assert walk(data[:-1], "GIF").frames == 3
    assert load_image(data[:-1]).image.size == (8, 8)


def test_walking_random_bytes_fails_only_with_image_errors() -> None:
    rng = random.Random(7)
    seeds = {fmt: _noise(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP")}
    for _ in range(400):
        fmt = rng.choice(sorted(seeds))
        data = bytearray(seeds[fmt])
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(CorruptImage, ImageTooComplex):
            walk(bytes(data[: rng.randint(1, len(data))]), fmt)
