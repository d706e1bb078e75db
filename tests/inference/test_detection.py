from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.detection import (
    DEFAULT_LABEL,
    LOC_BINS,
    Detection,
    box_to_loc_tokens,
    clean_label,
    format_detections,
    parse_detections,
)
from inference.errors import MalformedMessage


def test_parses_groups_in_order_as_pixel_boxes() -> None:
    text = "<loc0256><loc0512><loc0768><loc1023> cat ; <loc0000><loc0000><loc0512><loc0256> dog"
    assert parse_detections(text, 1024, 512) == [
        Detection("cat", (512, 128, 1023, 384)),
        Detection("dog", (0, 0, 256, 256)),
    ]


def test_scales_x_by_width_and_y_by_height() -> None:
    [det] = parse_detections("<loc0512><loc0256><loc1000><loc0768> box", 2000, 100)
    assert det.box == (500, 50, 1500, 98)


def test_swapped_corners_are_normalised() -> None:
    [det] = parse_detections("<loc0768><loc0768><loc0256><loc0256> x", 1024, 1024)
    assert det.box == (256, 256, 768, 768)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<loc0001><loc0002><loc0003> truncated", []),
        ("<loc0001><loc0002><loc0003><loc0004>", [DEFAULT_LABEL]),
        ("<loc0001><loc0002><loc0003><loc0004>   ;  ", [DEFAULT_LABEL]),
        ("<loc0001><loc0002><loc0003><loc1024> out of range ; <loc0001>", []),
        ("<loc0001><loc0002><loc0003><loc99999999999> cat", []),
        ("<loc0001><loc0002><loc0003><loc0004>  big \n\t  red   dog <eos>", ["big red dog"]),
        ("<loc0001><loc0002><loc0003><loc0004> cat<eos><pad><pad>", ["cat"]),
        ("<loc0001><loc0002><loc0003><loc0004> cat <eo", ["cat"]),
        ("junk before <loc0001><loc0002><loc0003><loc0004> cat ; junk after", ["cat"]),
        ("<loc0001> <loc0002>\n<loc0003>  <loc0004> spaced", ["spaced"]),
        ("<loc0001><seg012><loc0002><loc0003><loc0004> mixed", ["mixed"]),
        ("<loc0001><loc0002><loc0003><loc0004>" + "<seg001>" * 16 + " mask", ["mask"]),
        (
            "<loc0001><loc0002><loc0003><loc0004><loc0005><loc0006><loc0007><loc0008> b",
            [
                DEFAULT_LABEL,
                "b",
            ],
        ),
        ("I don't see any cats.", []),
        ("", []),
    ],
)
def test_malformed_output_is_skipped_or_repaired(text: str, expected: list[str]) -> None:
    assert [d.label for d in parse_detections(text, 640, 480)] == expected


def test_a_bad_loc_token_does_not_merge_its_neighbours() -> None:
    text = "<loc0001><loc0002><loc9999999999><loc0003><loc0004><loc0005> x"
    assert parse_detections(text, 100, 100) == []


def test_non_ascii_digits_are_not_loc_values() -> None:
    assert parse_detections("<loc٠٠٠١><loc0002><loc0003><loc0004> x", 100, 100) == []


def test_labels_are_cleaned() -> None:
    assert clean_label("  a ;  b<c> \n") == "a b c"
    assert clean_label(" \t ") == DEFAULT_LABEL


def test_invalid_image_size_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_detections("", 0, 10)


def test_box_to_loc_tokens_orders_y_x_and_clamps() -> None:
    assert box_to_loc_tokens((0, 0, 1024, 512), 1024, 512) == (
        "<loc0000><loc0000><loc1023><loc1023>"
    )
    assert box_to_loc_tokens((30, 10, 20, 40), 100, 100) == "<loc0102><loc0205><loc0410><loc0307>"


def test_format_detections_builds_the_target_text() -> None:
    dets = [Detection("cat", (0, 0, 50, 50)), Detection(" ", (50, 50, 100, 100))]
    assert format_detections(dets, 100, 100) == (
        "<loc0000><loc0000><loc0512><loc0512> cat ; <loc0512><loc0512><loc1023><loc1023> object"
    )


def test_detection_dict_round_trip() -> None:
    det = Detection("traffic light", (1, 2, 3, 4))
    assert det.to_dict() == {"label": "traffic light", "box": [1, 2, 3, 4]}
    assert Detection.from_dict(det.to_dict()) == det


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"label": 3, "box": [1, 2, 3, 4]},
        {"label": "a", "box": [1, 2, 3]},
        {"label": "a", "box": "1234"},
        {"label": "a", "box": [1, 2, 3, 4.5]},
        {"label": "a", "box": [1, 2, 3, True]},
    ],
)
def test_from_dict_rejects_malformed_data(data: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        Detection.from_dict(data)


# --- properties ---------------------------------------------------------------------------

# Hypothesis builds its Unicode table (~2 s) the first time st.text runs with a fresh
# .hypothesis directory, as on CI; that one-off cost is not a slow strategy.
cold_start_ok = [HealthCheck.too_slow]
sizes = st.integers(min_value=1, max_value=8000)
labels = st.text(min_size=0, max_size=20)


@st.composite
def image_and_boxes(draw: st.DrawFn) -> tuple[int, int, list[Detection]]:
    width, height = draw(sizes), draw(sizes)
    dets = []
    for _ in range(draw(st.integers(0, 6))):
        xs = sorted(draw(st.lists(st.integers(0, width), min_size=2, max_size=2)))
        ys = sorted(draw(st.lists(st.integers(0, height), min_size=2, max_size=2)))
        dets.append(Detection(draw(labels), (xs[0], ys[0], xs[1], ys[1])))
    return width, height, dets


@settings(max_examples=300, suppress_health_check=cold_start_ok)
@given(image_and_boxes())
def test_round_trip_is_within_one_loc_bin(case: tuple[int, int, list[Detection]]) -> None:
    width, height, dets = case
    parsed = parse_detections(format_detections(dets, width, height), width, height)
    assert [d.label for d in parsed] == [clean_label(d.label) for d in dets]
    # One bin where the far edge is clamped to <loc1023>, plus rounding to whole pixels.
    tol_x, tol_y = width / LOC_BINS + 0.5, height / LOC_BINS + 0.5
    for got, want in zip(parsed, dets, strict=True):
        for i, tol in enumerate((tol_x, tol_y, tol_x, tol_y)):
            assert abs(got.box[i] - want.box[i]) <= tol, (got, want)


tokens = st.one_of(
    st.integers(0, 1100).map(lambda v: f"<loc{v:04d}>"),
    st.integers(0, 10**12).map(lambda v: f"<loc{v}>"),
    st.integers(0, 200).map(lambda v: f"<seg{v:03d}>"),
    st.sampled_from(["<eos>", "<pad>", "<eo", "s>", " ; ", ";", " ", "\n", "<", ">", "<loc"]),
    st.text(max_size=8),
)


def _assert_inside(dets: list[Detection], width: int, height: int) -> None:
    for det in dets:
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 <= x1 <= width
        assert 0 <= y0 <= y1 <= height
        assert det.label == det.label.strip() and det.label
        assert "  " not in det.label and ";" not in det.label


@settings(max_examples=400, suppress_health_check=cold_start_ok)
@given(st.lists(tokens, max_size=40).map("".join), sizes, sizes)
def test_token_soup_never_raises_and_stays_inside(text: str, width: int, height: int) -> None:
    _assert_inside(parse_detections(text, width, height), width, height)


@settings(suppress_health_check=cold_start_ok)
@given(st.text(max_size=300), sizes, sizes)
def test_arbitrary_text_never_raises(text: str, width: int, height: int) -> None:
    _assert_inside(parse_detections(text, width, height), width, height)


def test_iou_of_boxes() -> None:
    from inference.detection import iou

    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((3, 3, 3, 3), (3, 3, 3, 3)) == 0.0
