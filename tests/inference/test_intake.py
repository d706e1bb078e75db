from __future__ import annotations

import io
import resource
import struct
import time
import warnings
import zlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from inference.errors import (
    CorruptImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    ImageTooManyPixels,
    NotAnImage,
    UnsupportedImageFormat,
)
from inference.intake import (
    MAX_ANIMATION_DECODE_PIXELS,
    ImageInfo,
    LoadedImage,
    load_image,
    probe_image,
    representative_frame,
    sniff_format,
    to_rgb,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def load(data: bytes, **kwargs: int) -> LoadedImage:
    return load_image(data, max_bytes=50 * 2**20, max_pixels=40_000_000, **kwargs)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def close(got: tuple[int, ...], want: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


# --- formats and refusals -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_probe_reads_the_header_of_each_supported_format(fmt: str) -> None:
    data = encode(Image.new("RGB", (30, 20), RED), fmt)
    info = probe_image(data, max_bytes=2**20, max_pixels=10_000)
    assert info == ImageInfo(format=fmt, width=30, height=20, frames=1)


def test_a_text_file_named_png_is_not_an_image() -> None:
    with pytest.raises(NotAnImage, match="not an image"):
        load(b"This is a text file, although it was uploaded as cat.png\n")


def test_bm_prefix_alone_is_not_a_bmp() -> None:
    with pytest.raises(NotAnImage):
        sniff_format(b"BMW owners manual, chapter one: the engine")


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "AVIF"),
        (b"II*\x00\x08\x00\x00\x00", "TIFF"),
        (b'  <?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ],
)
def test_known_but_unsupported_formats_are_named(data: bytes, name: str) -> None:
    with pytest.raises(UnsupportedImageFormat, match=name):
        probe_image(data)


def test_zero_bytes_is_empty() -> None:
    with pytest.raises(EmptyImage):
        probe_image(b"")


def test_byte_cap_message_gives_sizes_in_mb() -> None:
    data = encode(Image.new("RGB", (8, 8)), "PNG") + b"\x00" * (3 * 2**20)
    with pytest.raises(ImageTooLarge, match=r"That file is 3 MB; the limit is 2 MB\."):
        load_image(data, max_bytes=2 * 2**20)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("pillow_forgives", [False, True])
def test_truncated_files_are_corrupt(
    fmt: str, pillow_forgives: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some library in the process may have switched Pillow to accept truncated files.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pillow_forgives)
    data = encode(Image.effect_noise((64, 64), 40).convert("RGB"), fmt)
    with pytest.raises(CorruptImage):
        load(data[: len(data) * 3 // 4])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_garbage_after_a_valid_signature_is_corrupt(fmt: str) -> None:
    header = encode(Image.new("RGB", (8, 8)), fmt)[:30]
    with pytest.raises(CorruptImage):
        load(header + b"\x00\x01" * 50)


def test_image_errors_have_user_facing_messages() -> None:
    with pytest.raises(ImageError) as info:
        load(b"\xff\xd8\xff" + b"junk" * 10)
    assert "damaged" in str(info.value)


# --- decompression bombs ------------------------------------------------------------------


@pytest.mark.parametrize("check", [probe_image, load_image])
def test_a_50k_by_50k_png_header_is_refused_without_allocating(
    check: Callable[..., object],
) -> None:
    data = png_header_only(50_000, 50_000)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ImageTooManyPixels):
        check(data)
    assert time.perf_counter() - start < 0.5
    # 2.5 Gpx of RGB would be 7.5 GB; a header read stays in the noise.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb < 50_000


def test_pillows_own_bomb_error_is_translated() -> None:
    # With our cap set absurdly high, Pillow's hard limit (2 x MAX_IMAGE_PIXELS) refuses.
    with pytest.raises(ImageTooManyPixels, match="too many pixels"):
        probe_image(png_header_only(50_000, 50_000), max_pixels=10**12)


def test_pixel_cap_names_the_dimensions() -> None:
    with pytest.raises(ImageTooManyPixels) as info:
        probe_image(png_header_only(8000, 6000))
    assert str(info.value) == (
        "That image is 8,000 × 6,000 pixels (48 megapixels); the limit is 40 megapixels."
    )


def test_pillows_bomb_warning_raised_as_an_error_is_translated() -> None:
    data = png_header_only(10_000, 10_000)  # between Pillow's warning and error limits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooManyPixels):
            probe_image(data)


@pytest.mark.filterwarnings("error")
def test_pillow_metadata_warnings_raised_as_errors_are_translated() -> None:
    data = encode(_marked((20, 10)), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    with pytest.raises(CorruptImage):
        load(data)


def test_a_large_image_within_the_cap_is_not_a_bomb() -> None:
    # Pillow still warns above its own threshold; the warning is the process's business.
    with pytest.warns(Image.DecompressionBombWarning):
        info = probe_image(png_header_only(10_000, 10_000), max_pixels=100_000_000)
    assert (info.width, info.height) == (10_000, 10_000)


# --- decoding -----------------------------------------------------------------------------


def _rgba() -> bytes:
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    im.putpixel((1, 1), (0, 0, 255, 255))
    return encode(im, "PNG")


def _la() -> bytes:
    im = Image.new("LA", (4, 4), (0, 0))
    im.putpixel((1, 1), (0, 255))
    return encode(im, "PNG")


def _palette(fmt: str) -> Callable[[], bytes]:
    def build() -> bytes:
        im = Image.new("P", (4, 4), 0)
        im.putpalette([*RED, *BLUE] + [0] * 762)
        im.putpixel((1, 1), 1)
        return encode(im, fmt, transparency=0)

    return build


def _rgb_with_trns() -> bytes:
    im = Image.new("RGB", (4, 4), (0, 0, 0))
    im.putpixel((1, 1), BLUE)
    return encode(im, "PNG", transparency=(0, 0, 0))


@pytest.mark.parametrize(
    ("build", "opaque"),
    [
        (_rgba, BLUE),
        (_la, (0, 0, 0)),
        (_palette("PNG"), BLUE),
        (_palette("GIF"), BLUE),
        (_rgb_with_trns, BLUE),
    ],
    ids=["RGBA", "LA", "P-png", "P-gif", "RGB-tRNS"],
)
def test_transparency_is_composited_over_white(
    build: Callable[[], bytes], opaque: tuple[int, int, int]
) -> None:
    loaded = load(build())
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((0, 0)) == WHITE
    assert loaded.image.getpixel((1, 1)) == opaque


@pytest.mark.parametrize(
    ("im", "fmt", "want"),
    [
        (Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        (Image.new("1", (4, 4), 1), "PNG", WHITE),
        (Image.new("1", (4, 4), 1), "BMP", WHITE),
        (Image.new("I;16", (4, 4), 32768), "PNG", (128, 128, 128)),
        (Image.new("I;16", (4, 4), 200), "PNG", (0, 0, 0)),
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", RED),
        (Image.new("RGB", (16, 16), BLUE), "WEBP", BLUE),
    ],
    ids=["L", "1", "1-bmp", "I16-mid", "I16-dark", "CMYK", "RGB-webp"],
)
def test_modes_become_rgb(im: Image.Image, fmt: str, want: tuple[int, int, int]) -> None:
    loaded = load(encode(im, fmt))
    assert loaded.image.mode == "RGB"
    pixel = loaded.image.getpixel((2, 2))
    assert isinstance(pixel, tuple)
    assert close(pixel, want), pixel


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animations_yield_their_middle_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE, (0, 255, 0))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, **extra)
    info = probe_image(data)
    assert (info.frames, info.shown_frame) == (3, 2)
    loaded = load(data)
    assert (loaded.frame, loaded.frames) == (2, 3)
    pixel = loaded.image.getpixel((4, 4))
    assert isinstance(pixel, tuple)
    assert close(pixel, BLUE, tol=2)


def test_the_frame_chosen_stays_within_the_decode_budget() -> None:
    assert representative_frame(1, 100, 100) == 1
    assert representative_frame(24, 480, 270) == 12
    assert representative_frame(25, 480, 270) == 13
    # 20 megapixels a frame: two frames' decoding is the budget.
    side = 4473
    assert representative_frame(500, side, side) == MAX_ANIMATION_DECODE_PIXELS // side**2
    assert representative_frame(500, 10_000, 10_000) == 1  # never below the first


def _marked(size: tuple[int, int]) -> Image.Image:
    im = Image.new("RGB", size, WHITE)
    im.paste(RED, (0, 0, 4, 4))  # marks the stored top-left corner
    return im


@pytest.mark.parametrize(
    ("orientation", "red_corner"),
    [(1, (0, 0)), (3, (19, 9)), (6, (9, 0)), (8, (0, 19))],
)
def test_exif_orientation_is_applied(orientation: int, red_corner: tuple[int, int]) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load(encode(_marked((20, 10)), "JPEG", exif=exif.tobytes(), quality=95))
    want = (20, 10) if orientation in (1, 3) else (10, 20)
    assert loaded.image.size == want
    assert loaded.original_size == want
    corner = loaded.image.getpixel(red_corner)
    assert isinstance(corner, tuple)
    assert close(corner, RED, tol=40)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unreadable_exif_is_ignored() -> None:
    data = encode(_marked((20, 10)), "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    assert load(data).original_size == (20, 10)


def test_draft_mode_decodes_a_big_jpeg_at_reduced_scale() -> None:
    data = encode(Image.linear_gradient("L").resize((6000, 4000)).convert("RGB"), "JPEG")
    loaded = load(data, target_size=448)
    assert loaded.original_size == (6000, 4000)
    assert loaded.image.size == (750, 500)  # libjpeg's 1/8 scale, both sides >= 448


def test_draft_mode_keeps_rotated_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (4000, 3000), BLUE), "JPEG", exif=exif.tobytes())
    loaded = load(data, target_size=448)
    assert loaded.original_size == (3000, 4000)
    # libjpeg's 1/4 scale (1/8 would give 375 < 448) is 750 x 1000 upright; the long side
    # then shrinks to 2 x 448.
    assert loaded.image.size == (672, 896)


@pytest.mark.parametrize(
    ("size", "want"),
    [((3000, 2000), (896, 597)), ((4000, 500), (3584, 448)), ((600, 400), (600, 400))],
    ids=["photo", "panorama", "small"],
)
def test_big_non_jpegs_are_reduced_after_decoding(
    size: tuple[int, int], want: tuple[int, int]
) -> None:
    loaded = load(encode(Image.new("RGB", size, RED), "PNG"), target_size=448)
    assert loaded.image.size == want
    assert loaded.original_size == size


def test_without_target_size_the_image_keeps_full_size() -> None:
    data = encode(Image.new("RGB", (1600, 1200), RED), "JPEG")
    assert load(data).image.size == (1600, 1200)


# --- fuzzing: every failure is a typed ImageError -----------------------------------------

_SEEDS = {
    fmt: encode(Image.effect_noise((24, 16), 50).convert("RGB"), fmt)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP")
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(_SEEDS)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_damaged_files_fail_only_with_image_errors(
    fmt: str, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_SEEDS[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    try:
        loaded = load(bytes(data[: max(1, len(data) - cut)]), target_size=16)
    except ImageError:
        return
    assert loaded.image.mode == "RGB"


@pytest.mark.parametrize(("value", "want"), [(40000, 156), (100, 100)])
def test_32_bit_samples_are_scaled_only_when_they_exceed_8_bits(value: int, want: int) -> None:
    rgb = to_rgb(Image.new("I", (2, 2), value))
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (want, want, want)
