"""Parsing `segment` answers, packing masks for the queue, and COCO RLE."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from PIL import Image

from inference.engine.masks import encode_mask
from inference.errors import MalformedMessage
from inference.segmentation import (
    MAX_LABEL_CHARS,
    MAX_SEGMENTS,
    decode_mask,
    mask_in_box,
    parse_segments,
    rle_encode,
)
from tests.support.masks import rle_decode

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser

CODES = "".join(f"<seg{c:03d}>" for c in range(0, 128, 8))


def test_valid_answer() -> None:
    text = f"<loc0256><loc0128><loc0768><loc0512>{CODES} cat ; "
    text += "<loc0000><loc0000><loc1023><loc1023> dog"
    a, b = parse_segments(text, 2048, 1024)
    assert (a.label, a.box, a.codes) == ("cat", (256, 256, 1024, 768), tuple(range(0, 128, 8)))
    # No seg group: a box without a mask. Same loc rule as detect: value / 1024 × side.
    assert (b.label, b.box, b.codes) == ("dog", (0, 0, 2046, 1023), None)


def test_out_of_range_or_short_code_groups_drop_the_mask_not_the_box() -> None:
    bad = CODES.replace("<seg000>", "<seg128>")
    short = CODES.replace("<seg000>", "")
    box = "<loc0000><loc0000><loc0100><loc0100>"
    text = f"{box}{bad} a ; {box}{short} b"
    segments = parse_segments(text, 1024, 1024)
    assert [(s.label, s.codes) for s in segments] == [("a", None), ("b", None)]


@pytest.mark.parametrize(
    "locs",
    [
        "<loc0500><loc0100><loc0400><loc0200>",  # y2 < y1
        "<loc0100><loc0500><loc0200><loc0400>",  # x2 < x1
        "<loc0100><loc0100><loc0100><loc0200>",  # empty: y2 == y1
        "<loc0100><loc0100><loc1024><loc0200>",  # no bin 1024
        "<loc0100><loc0100><loc0200>",  # three locs
    ],
)
def test_bad_boxes_are_skipped(locs: str) -> None:
    assert parse_segments(f"{locs}{CODES} cat", 100, 100) == []


def test_hostile_output_is_capped_and_never_raises() -> None:
    one = f"<loc0000><loc0000><loc0100><loc0100>{CODES} {'x' * 10_000}"
    segments = parse_segments(" ; ".join([one] * 500), 4000, 4000)
    assert len(segments) == MAX_SEGMENTS
    assert all(len(s.label) <= MAX_LABEL_CHARS for s in segments)
    garbage = "<seg999999999999><loc99999999><eos><seg><loc>;;;<loc0001>" * 1000
    assert parse_segments(garbage + "<unk>" * 100, 10, 10) == []


def test_mask_packing_round_trip_and_size() -> None:
    rng = np.random.default_rng(0)
    mask = np.clip(rng.standard_normal((64, 64)), -1, 1).astype(np.float32)
    packed = encode_mask(mask)
    levels = np.asarray(decode_mask(packed))
    assert levels.shape == (64, 64) and levels.dtype == np.uint8
    assert np.array_equal(levels >= 128, mask > 0)
    # Real masks are mostly ±1 and pack to a few hundred characters.
    flat = np.where(np.arange(64)[:, None] < 30, 1.0, -1.0) * np.ones((64, 64))
    assert len(encode_mask(flat)) < 200


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"not zlib").decode(),
        base64.b64encode(zlib.compress(b"\x00" * 100)).decode(),  # too small
        base64.b64encode(zlib.compress(b"\x00" * 10**7)).decode(),  # a bomb: too large
        "A" * 10_000,
    ],
)
def test_bad_packed_masks_are_refused(text: str) -> None:
    with pytest.raises(MalformedMessage):
        decode_mask(text)


def _levels(picture: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(picture, 255, 0).astype(np.uint8), mode="L")


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ((10, 5, 74, 69), (100, 80)),  # inside
        ((0, 0, 100, 80), (100, 80)),  # the whole picture: runs join across columns
        ((-20, 30, 40, 200), (60, 90)),  # partly outside
        ((3, 4, 5, 6), (7, 9)),  # tiny
    ],
)
def test_rle_round_trip(box: tuple[int, int, int, int], size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(box))
    bits = rng.random((64, 64)) > 0.5
    bits[:8, :8] = True  # the top-left foreground: with a whole-picture box, a 0 first run
    mask = _levels(bits)
    rle = rle_encode(mask, box, size)
    width, height = size
    assert rle["size"] == [height, width]
    counts = rle["counts"]
    assert isinstance(counts, list) and sum(counts) == width * height
    assert all(c > 0 for c in counts[1:])
    decoded = rle_decode(rle)
    want = np.zeros((height, width), dtype=bool)
    left, top, region = mask_in_box(mask, box, size)
    assert region is not None
    inside = np.asarray(region) == 255
    want[top : top + inside.shape[0], left : left + inside.shape[1]] = inside
    assert np.array_equal(decoded, want)
    assert decoded.any()


def test_rle_is_column_major_and_starts_with_background() -> None:
    # Foreground exactly the right half of a 4 × 2 picture (columns 2 and 3).
    mask = Image.new("L", (64, 64), 255)
    rle = rle_encode(mask, (2, 0, 4, 2), (4, 2))
    assert rle == {"size": [2, 4], "counts": [4, 4]}
    rle = rle_encode(mask, (0, 0, 4, 2), (4, 2))
    assert rle == {"size": [2, 4], "counts": [0, 8]}
    empty = rle_encode(Image.new("L", (64, 64), 0), (0, 0, 4, 2), (4, 2))
    assert empty == {"size": [2, 4], "counts": [8]}
