"""An independent COCO RLE decoder for the tests (numpy, unlike the torch-free encoder)."""

from __future__ import annotations

from typing import Any

import numpy as np


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The (height, width) boolean mask of a COCO uncompressed RLE: column-major runs,
    background first."""
    height, width = (int(v) for v in rle["size"])
    values = np.zeros(height * width, dtype=np.bool_)
    position, on = 0, False
    for count in rle["counts"]:
        values[position : position + count] = on
        position += count
        on = not on
    return values.reshape(width, height).T
