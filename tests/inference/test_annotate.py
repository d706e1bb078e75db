from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import inference.annotate as annotate_module
from inference.annotate import (
    PALETTE,
    AnnotatedImage,
    annotate,
    assign_colors,
    draw_detections,
    label_color,
    place_tag,
    text_color,
)
from inference.detection import Detection

WHITE = (255, 255, 255)


def decode(result: AnnotatedImage) -> Image.Image:
    img = Image.open(io.BytesIO(result.data))
    assert img.format == result.format
    img.load()
    return img


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _luminance(c: tuple[int, int, int]) -> float:
    def lin(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(v) for v in c)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# --- colours ------------------------------------------------------------------------------


def test_label_colour_is_pinned_and_case_insensitive() -> None:
    assert label_color("cat") == (0, 130, 200)
    assert label_color("  CAT ") == label_color("cat")
    assert label_color("traffic  light") == label_color("traffic light")


def test_label_colour_is_the_same_in_another_process() -> None:
    # str hashes are salted per process; the colour must not depend on that salt.
    code = "from inference.annotate import label_color as c; print(c('cat'), c('zebra'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == f"{label_color('cat')} {label_color('zebra')}"


def test_the_image_modules_never_import_torch() -> None:
    # The bot imports annotate (and through it intake, detection and segmentation) without
    # a GPU stack, or numpy.
    code = (
        "import sys, inference.annotate, inference.intake, inference.detection, "
        "inference.segmentation; "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_labels_in_one_image_get_distinct_colours() -> None:
    # "cat" and "dog" hash to the same palette entry; one picture must still tell them apart.
    assert label_color("cat") == label_color("dog")
    colours = assign_colors(["cat", "dog", "cat"])
    assert colours["cat"] != colours["dog"]


# The first st.text on a fresh .hypothesis directory (as on CI) builds a Unicode table.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True))
def test_assigned_colours_are_distinct_stable_and_order_free(labels: list[str]) -> None:
    colours = assign_colors(labels)
    assert colours == assign_colors(list(reversed(labels)))
    assert set(colours.values()) <= set(PALETTE)
    distinct = {" ".join(label.casefold().split()) for label in labels}
    assert len(set(colours.values())) == min(len(distinct), len(PALETTE))


@pytest.mark.parametrize("colour", PALETTE)
def test_tag_text_is_readable_on_every_palette_colour(colour: tuple[int, int, int]) -> None:
    fg = text_color(colour)
    lo, hi = sorted((_luminance(colour), _luminance(fg)))
    assert (hi + 0.05) / (lo + 0.05) >= 4.5  # WCAG AA for normal text


# --- drawing ------------------------------------------------------------------------------


def test_output_is_a_png_of_the_input_size() -> None:
    img = Image.new("RGB", (320, 200), WHITE)
    result = annotate(img, [Detection("cat", (10, 20, 100, 120))])
    assert result.format == "PNG" and result.extension == "png"
    assert decode(result).size == (320, 200) == result.size


def test_no_detections_leaves_the_pixels_alone() -> None:
    img = Image.effect_noise((64, 48), 30).convert("RGB")
    assert decode(annotate(img, [])).tobytes() == img.tobytes()


def test_box_outline_carries_the_label_colour() -> None:
    img = Image.new("RGB", (200, 200), WHITE)
    drawn = draw_detections(img, [Detection("dog", (40, 60, 160, 180))])
    colour = label_color("dog")
    # Outline pixels lie just inside the box: a dark rim, then the colour.
    assert pixel(drawn, (40, 120)) == (0, 0, 0)
    assert pixel(drawn, (41, 120)) == colour
    assert pixel(drawn, (158, 120)) == colour
    assert pixel(drawn, (100, 178)) == colour
    assert pixel(drawn, (100, 120)) == WHITE  # the inside stays untouched
    assert pixel(drawn, (30, 120)) == WHITE  # and so does the outside


def test_rgba_input_is_accepted() -> None:
    img = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert decode(annotate(img, [Detection("x", (5, 5, 20, 20))])).mode == "RGB"


def test_boxes_outside_the_image_are_clipped_not_fatal() -> None:
    img = Image.new("RGB", (40, 30), WHITE)
    out = draw_detections(img, [Detection("far", (-50, -50, 500, 500))])
    assert out.size == (40, 30)
    assert pixel(out, (39, 29)) == (0, 0, 0)  # the rim at the image's corner


@pytest.mark.parametrize("size", [(120, 90), (800, 600), (2400, 1600)])
def test_label_tag_at_the_top_right_corner_stays_inside(size: tuple[int, int]) -> None:
    width, height = size
    img = Image.new("RGB", size, WHITE)
    box = (width - width // 20, 0, width, height // 20)
    drawn = draw_detections(img, [Detection("person", box)])
    colour = label_color("person")
    # The tag moved inside the top edge and left from the right edge: a dark 1-px rim,
    # then its fill, which starts left of the box because the tag is wider than it.
    assert pixel(drawn, (width - 1, 1)) == (0, 0, 0)
    assert pixel(drawn, (width - 2, 1)) == colour
    row = [pixel(drawn, (x, 1)) for x in range(width)]
    tag_pixels = [x for x, p in enumerate(row) if p == colour]
    assert tag_pixels and tag_pixels[0] < box[0]
    assert tag_pixels == list(range(tag_pixels[0], width - 1))


@given(
    st.tuples(st.integers(-50, 1000), st.integers(-50, 1000)),
    st.tuples(st.integers(1, 400), st.integers(1, 80)),
    st.tuples(st.integers(1, 1000), st.integers(1, 1000)),
)
def test_tags_are_placed_inside_the_image_when_they_fit(
    origin: tuple[int, int], tag: tuple[int, int], image: tuple[int, int]
) -> None:
    (_, y0), (tag_w, tag_h), (width, height) = origin, tag, image
    tag_x, tag_y = place_tag(origin, tag, image)
    assert tag_x >= 0 and tag_y >= 0
    if tag_w <= width:
        assert tag_x + tag_w <= width
    if tag_h <= height:
        assert tag_y + tag_h <= height
    if tag_h <= y0 < height and tag_w <= width:  # room above: the tag sits on the box
        assert tag_y + tag_h == y0


@pytest.mark.parametrize(
    "det",
    [
        Detection("dot", (10, 10, 10, 10)),
        Detection("thin", (10, 10, 11, 90)),
        Detection("multi\nline\tlabel", (10, 40, 60, 60)),
        Detection("", (10, 40, 60, 60)),
        Detection("x" * 5000, (10, 40, 60, 60)),
    ],
    ids=["empty-box", "thin-box", "multiline-label", "empty-label", "huge-label"],
)
def test_odd_detections_are_drawn_without_error(det: Detection) -> None:
    img = Image.new("RGB", (100, 100), WHITE)
    assert draw_detections(img, [det]).size == (100, 100)


def test_long_labels_are_shortened_to_fit() -> None:
    img = Image.new("RGB", (100, 100), WHITE)
    label = "an extraordinarily long label that cannot possibly fit " * 3
    drawn = draw_detections(img, [Detection(label, (0, 50, 100, 100))])
    row = [pixel(drawn, (x, 40)) for x in range(100)]  # through the tag above the box
    colour = label_color(label)
    last_fill = max(x for x, p in enumerate(row) if p == colour)
    assert last_fill <= 98 and row[last_fill + 1] == (0, 0, 0)  # the tag's right rim


# --- byte cap -----------------------------------------------------------------------------


def test_noisy_image_is_shrunk_until_under_the_byte_cap() -> None:
    img = Image.effect_noise((900, 600), 80).convert("RGB")
    dets = [Detection("noise", (100, 100, 800, 500))]
    result = annotate(img, dets, max_bytes=60_000)
    assert len(result.data) <= 60_000
    assert result.format == "JPEG" and result.extension == "jpg"
    out = decode(result)
    assert out.size == result.size
    assert out.width < 900 and abs(out.width / out.height - 1.5) < 0.02
    # The box was redrawn at the new scale: its left edge carries the label colour.
    scale = out.width / 900
    colour = label_color("noise")
    near_edge = [
        pixel(out, (x, round(300 * scale)))
        for x in range(round(100 * scale) - 2, round(100 * scale) + 6)
    ]
    assert any(max(abs(a - b) for a, b in zip(p, colour, strict=True)) < 60 for p in near_edge)


def test_an_impossible_byte_cap_is_an_error() -> None:
    img = Image.effect_noise((200, 200), 80).convert("RGB")
    with pytest.raises(ValueError, match="cannot encode"):
        annotate(img, [], max_bytes=100)


def test_a_large_flat_image_stays_png() -> None:
    img = Image.new("RGB", (2000, 1500), (240, 240, 240))
    result = annotate(img, [Detection("button", (100, 100, 400, 200))])
    assert result.format == "PNG" and result.size == (2000, 1500)


def test_a_large_photo_is_not_first_encoded_as_a_doomed_png(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[tuple[str, tuple[int, int]]] = []
    real_encode = annotate_module._encode

    def spy(image: Image.Image, fmt: str) -> bytes:
        encoded.append((fmt, image.size))
        return real_encode(image, fmt)

    monkeypatch.setattr(annotate_module, "_encode", spy)
    img = Image.effect_noise((1200, 1000), 80).convert("RGB")
    result = annotate(img, [], max_bytes=1_000_000)
    assert result.format == "JPEG"
    assert ("PNG", (1200, 1000)) not in encoded
    assert encoded[-1] == ("JPEG", (1200, 1000))
