"""The demo's mask VQ-VAE as committed (models/palicord-tiny/mask_decoder.npz) and the
segment stage's targets: what the demo model was taught to answer."""

from __future__ import annotations

import numpy as np
import pytest

from inference.demo import shapes
from inference.demo.finetune import MASK_DECODER_FILE, segment_target
from inference.demo.masks import ShapeCoder, box_mask
from inference.engine.masks import decode_masks, load_arrays, load_mask_decoder
from inference.segmentation import parse_segments
from tests.support.demo import DEMO_MODEL

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser

COMMITTED = DEMO_MODEL / MASK_DECODER_FILE


def test_the_committed_file_is_in_the_vae_oid_layout_with_its_encoder() -> None:
    arrays = load_arrays(COMMITTED)
    assert arrays["_vq_vae._embedding"].shape == (128, 512)
    assert any(key.startswith("encoder.") for key in arrays)  # ignored by decoding


@pytest.mark.parametrize("kind", shapes.SHAPES)
def test_each_shape_round_trips_through_its_codes(kind: str) -> None:
    coder, decoder = ShapeCoder(COMMITTED), load_mask_decoder(COMMITTED)
    for width, height in ((24, 24), (90, 50), (140, 150)):
        truth = box_mask(kind, width, height) > 0.5
        codes = coder.codes(kind, width, height)
        assert len(codes) == 16 and all(0 <= c < 128 for c in codes)
        mask = decode_masks(decoder, [codes])[0] > 0
        assert (mask & truth).sum() / (mask | truth).sum() >= 0.9


def test_kinds_get_distinct_codes() -> None:
    coder = ShapeCoder(COMMITTED)
    assert len({tuple(coder.codes(kind, 80, 80)) for kind in shapes.SHAPES}) == 3


def test_a_segment_target_parses_back_to_its_shape() -> None:
    coder = ShapeCoder(COMMITTED)
    shape = shapes.Shape("circle", "red", (40, 20, 120, 100))
    [parsed] = parse_segments(segment_target(coder, shape, 200, 160), 200, 160)
    assert parsed.label == "circle" and parsed.codes == tuple(coder.codes("circle", 80, 80))
    assert np.allclose(parsed.box, shape.box, atol=1)
