"""The display copy: made once with the model's input, upright, Discord-sized, with the
model's pixels unchanged; its wire form checked like any queue field; and the bounded
fallback for results that come without one. (New module: every test fails on the code
before it.)"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image, ImageDraw

from inference.detection import Detection
from inference.display import (
    DISPLAY_MAX_BYTES,
    DISPLAY_MAX_SIDE_PX,
    FALLBACK_MAX_DECODED_PIXELS,
    DisplayPicture,
    load_with_display,
    reduced_picture,
    scale_detections,
)
from inference.errors import ImageTooManyPixels, MalformedMessage
from inference.intake import load_image
from tests.support.bot_memory import big_upload

RED, WHITE = (255, 0, 0), (255, 255, 255)
MODEL_SIDE = 448


def marked(size: tuple[int, int], fmt: str, orientation: int = 1) -> bytes:
    """A white picture with a red block in its stored top-left corner."""
    image = Image.new("RGB", size, WHITE)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 8, size[1] // 8), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, fmt, exif=exif.tobytes(), **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def reddish(pixel: object) -> bool:
    assert isinstance(pixel, tuple)
    red, green, blue = (int(c) for c in pixel[:3])
    return red > 200 and green < 60 and blue < 60


def test_the_copy_of_an_exif_rotated_jpeg_is_upright_and_display_sized() -> None:
    # Stored 3000 x 2000, orientation 6 (turn 90° clockwise to show): upright 2000 x 3000,
    # and the stored top-left corner is the upright top-right one.
    loaded, display = load_with_display(marked((3000, 2000), "JPEG", 6), target_size=MODEL_SIDE)
    assert display.original_size == loaded.original_size == (2000, 3000)
    picture = display.open()
    assert picture.size == (1067, DISPLAY_MAX_SIDE_PX)
    assert reddish(picture.getpixel((picture.width - 5, 5)))
    assert not reddish(picture.getpixel((5, 5)))
    assert len(display.data) <= DISPLAY_MAX_BYTES


@pytest.mark.parametrize(("fmt", "size"), [("JPEG", (3000, 2000)), ("PNG", (2500, 1200))])
def test_the_model_sees_the_same_pixels_with_or_without_a_copy(
    fmt: str, size: tuple[int, int]
) -> None:
    # The image-feature cache is keyed by the picture alone: a detect and a caption of
    # the same picture must give the vision tower the same input.
    data = marked(size, fmt)
    alone = load_image(data, target_size=MODEL_SIDE)
    loaded, display = load_with_display(data, target_size=MODEL_SIDE)
    assert loaded.image.tobytes() == alone.image.tobytes()
    assert loaded.original_size == alone.original_size == size
    assert max(display.open().size) == DISPLAY_MAX_SIDE_PX


def test_a_small_picture_is_copied_at_its_own_size() -> None:
    _, display = load_with_display(marked((200, 150), "PNG"), target_size=MODEL_SIDE)
    picture = display.open()
    assert picture.size == display.original_size == (200, 150)
    assert reddish(picture.getpixel((2, 2)))


def test_wire_form_round_trip() -> None:
    display = DisplayPicture(b"\x89PNG not really", (7900, 5000))
    assert DisplayPicture.from_dict(display.to_dict()) == display
    assert DisplayPicture.from_json_value(None) is None


@pytest.mark.parametrize(
    "value",
    [
        "x",
        {"data": "!!not base64!!", "original_size": [1, 1]},
        {"data": "AAAA", "original_size": [1]},
        {"data": "AAAA", "original_size": [0, 5]},
        {"data": "AAAA", "original_size": [True, 5]},
        {"data": 5, "original_size": [1, 1]},
        {"data": "A" * (DISPLAY_MAX_BYTES * 2), "original_size": [1, 1]},
    ],
)
def test_bad_wire_forms_are_malformed(value: object) -> None:
    with pytest.raises(MalformedMessage):
        DisplayPicture.from_dict(value)


def test_a_copy_with_too_many_pixels_is_refused_by_its_reader() -> None:
    # A forged or buggy result cannot make the bot decode a big picture.
    out = io.BytesIO()
    Image.new("RGB", (DISPLAY_MAX_SIDE_PX + 10, DISPLAY_MAX_SIDE_PX)).save(out, "PNG")
    forged = DisplayPicture.from_dict(
        {"data": base64.b64encode(out.getvalue()).decode(), "original_size": [10, 10]}
    )
    with pytest.raises(ImageTooManyPixels):
        forged.open()


def test_boxes_move_onto_the_copy() -> None:
    boxes = scale_detections([Detection("cat", (100, 50, 7900, 5000))], (7900, 5000), (1600, 1013))
    assert boxes == [Detection("cat", (20, 10, 1600, 1013))]


def test_without_a_copy_a_big_jpeg_is_drawn_from_a_draft_decode() -> None:
    loaded = reduced_picture(marked((6000, 4000), "JPEG", 6))
    assert loaded is not None
    assert loaded.original_size == (4000, 6000)
    assert max(loaded.image.size) <= DISPLAY_MAX_SIDE_PX
    assert reddish(loaded.image.getpixel((loaded.image.width - 5, 5)))


def test_without_a_copy_a_big_png_is_not_decoded_at_all() -> None:
    upload, _ = big_upload(7900, 5000)
    assert FALLBACK_MAX_DECODED_PIXELS // 2 < 7900 * 5000
    assert reduced_picture(upload) is None
    small = reduced_picture(marked((2000, 1000), "PNG"))
    assert small is not None and small.image.size == (DISPLAY_MAX_SIDE_PX, 800)
