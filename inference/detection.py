"""PaliGemma detection output: `<locY1><locX1><locY2><locX2> label ; ...` to pixel boxes.

Torch-free. The parser takes whatever text the model produced and never raises on it: a
small model, a token budget cut mid-answer or sampling can all produce half a box.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from inference.errors import MalformedMessage

LOC_BINS = 1024  # <loc0000> .. <loc1023>
DEFAULT_LABEL = "object"
# A packed 64×64 mask is at most ~5.5 k characters (inference.segmentation).
MAX_MASK_CHARS = 6_000

# Eight digits is plenty to see a value is out of range and stays far below Python's
# int-from-string digit limit, which would otherwise raise ValueError on hostile text.
_GROUP_RE = re.compile(
    r"<loc([0-9]{1,8})>\s*<loc([0-9]{1,8})>\s*<loc([0-9]{1,8})>\s*<loc([0-9]{1,8})>"
    r"([^<;]*)"
)
# Any other special token (<seg042>, <eos>, <pad>, ...) is noise between boxes and labels.
# Malformed loc tokens stay, so that they break their group instead of letting the loc
# tokens on either side merge into a box that was never predicted.
_OTHER_TOKEN_RE = re.compile(r"<(?!loc)[A-Za-z_][A-Za-z0-9_]{0,30}>")
_LABEL_JUNK_RE = re.compile(r"[<>;]")


@dataclass(frozen=True, slots=True)
class Detection:
    """One labelled box in pixel coordinates of the original image: (x0, y0, x1, y1).

    A segment is a detection with a mask: its 64×64 decoder output covering the box, as
    `inference.engine.masks.encode_mask` packs it (None: no mask).
    """

    label: str
    box: tuple[int, int, int, int]
    mask: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: {"label": str, "box": [x0, y0, x1, y1]} (+ "mask" if any)."""
        out: dict[str, object] = {"label": self.label, "box": list(self.box)}
        if self.mask is not None:
            out["mask"] = self.mask
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Detection:
        """Inverse of `to_dict`; raises MalformedMessage on anything else."""
        label = data.get("label")
        box = data.get("box")
        mask = data.get("mask")
        if not isinstance(label, str):
            raise MalformedMessage("A detection has no text label.")
        if not isinstance(box, list | tuple) or len(box) != 4:
            raise MalformedMessage("A detection box must have four coordinates.")
        # Its content is checked where it is unpacked (segmentation.decode_mask).
        if mask is not None and (not isinstance(mask, str) or len(mask) > MAX_MASK_CHARS):
            raise MalformedMessage("A detection mask must be a short string.")
        coords: list[int] = []
        for value in box:
            # bool is an int subclass; True as a coordinate is a bug upstream, not a pixel.
            if not isinstance(value, int) or isinstance(value, bool):
                raise MalformedMessage("Detection box coordinates must be integers.")
            coords.append(value)
        return cls(label=label, box=(coords[0], coords[1], coords[2], coords[3]), mask=mask)


def clean_label(text: str) -> str:
    """Strip, collapse whitespace and drop characters that would break the format."""
    return " ".join(_LABEL_JUNK_RE.sub(" ", text).split()) or DEFAULT_LABEL


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def loc_to_px(loc: int, size: int) -> int:
    """A loc token's value (0..1023) as a pixel coordinate on a side of `size` pixels.

    The one rule for detect and segment boxes: big_vision's segmentation evaluator
    divides by 1023, its demo, Hugging Face's PaliGemma docs and our training targets
    (`box_to_loc_tokens`) by 1024. The two differ by under 0.1% of the side (under one
    pixel below 1,024 px); one rule keeps a segment's box equal to a detect box of the
    same tokens, and 1024 is what the demo model learned.
    """
    return round(loc * size / LOC_BINS)


def _px_to_loc(px: float, size: int) -> int:
    # Rounding (not flooring) keeps the round trip within half a bin, except at the far
    # edge where bin 1024 does not exist and the clamp costs one bin.
    return min(max(round(px * LOC_BINS / size), 0), LOC_BINS - 1)


def parse_detections(text: str, width: int, height: int) -> list[Detection]:
    """Parse PaliGemma detect output into pixel boxes, skipping whatever is malformed."""
    _check_size(width, height)
    text = _OTHER_TOKEN_RE.sub(" ", text)
    detections: list[Detection] = []
    for match in _GROUP_RE.finditer(text):
        locs = [int(g) for g in match.groups()[:4]]
        if any(v >= LOC_BINS for v in locs):
            continue
        y_a, x_a, y_b, x_b = locs
        x0, x1 = sorted((loc_to_px(x_a, width), loc_to_px(x_b, width)))
        y0, y1 = sorted((loc_to_px(y_a, height), loc_to_px(y_b, height)))
        detections.append(Detection(label=clean_label(match.group(5)), box=(x0, y0, x1, y1)))
    return detections


def box_to_loc_tokens(box: Sequence[float], width: int, height: int) -> str:
    """Pixel box (x0, y0, x1, y1) to PaliGemma's `<locY1><locX1><locY2><locX2>`."""
    _check_size(width, height)
    x0, y0, x1, y1 = box
    y_lo, y_hi = sorted((_px_to_loc(y0, height), _px_to_loc(y1, height)))
    x_lo, x_hi = sorted((_px_to_loc(x0, width), _px_to_loc(x1, width)))
    return f"<loc{y_lo:04d}><loc{x_lo:04d}><loc{y_hi:04d}><loc{x_hi:04d}>"


def format_detections(detections: Sequence[Detection], width: int, height: int) -> str:
    """Render detections as the model's target text (the inverse of parse_detections)."""
    return " ; ".join(
        f"{box_to_loc_tokens(d.box, width, height)} {clean_label(d.label)}" for d in detections
    )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0 when both are empty."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
