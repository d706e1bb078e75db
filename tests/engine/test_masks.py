"""The torch mask decoder against an independent numpy rendering of big_vision's Flax code,
and loading files in the vae-oid.npz layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inference.detection import MAX_MASK_CHARS
from inference.engine.masks import (
    MaskDecoder,
    decode_masks,
    decoder_shapes,
    load_mask_decoder,
    segment_results,
)
from inference.errors import ModelLoadError
from inference.segmentation import MAX_LABEL_CHARS, MAX_SEGMENTS, decode_mask

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser

# ---- The reference: big_vision/evaluators/proj/paligemma/transfers/segmentation.py,
# followed literally in numpy (NHWC activations, HWIO kernels made by its `transp`).


def _transp(kernel: np.ndarray) -> np.ndarray:
    return np.transpose(kernel, (2, 3, 1, 0))  # big_vision's `_get_params.transp`


def _flax_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, padding: int) -> np.ndarray:
    """flax.linen.Conv (stride 1, explicit padding): a cross-correlation, kernel HWIO."""
    kh, kw = kernel.shape[:2]
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i : i + h, j : j + w, :] @ kernel[i, j]
    return np.asarray(out + bias)


def _flax_conv_transpose(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """nn.ConvTranspose(kernel_size=(4, 4), strides=(2, 2), padding=2, transpose_kernel=True)
    as jax.lax.conv_transpose computes it: the input dilated by the stride (zeros between
    pixels), padded by 2 on each side, and cross-correlated with the kernel flipped in
    space and with its two channel axes swapped (transpose_kernel=True)."""
    n, h, w, c = x.shape
    dilated = np.zeros((n, 2 * h - 1, 2 * w - 1, c), dtype=x.dtype)
    dilated[:, ::2, ::2, :] = x
    flipped = np.swapaxes(kernel[::-1, ::-1], 2, 3)
    return _flax_conv(dilated, flipped, bias, padding=2)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.maximum(x, 0))


def reference_decode(state: dict[str, np.ndarray], codes: np.ndarray) -> np.ndarray:
    """big_vision's `_quantized_values_from_codebook_indices` + `Decoder`, in float64."""
    p = {k: v.astype(np.float64) for k, v in state.items()}

    def conv(x: np.ndarray, name: str, padding: int = 0) -> np.ndarray:
        return _flax_conv(x, _transp(p[name + ".weight"]), p[name + ".bias"], padding)

    embeddings = p["_vq_vae._embedding"]
    x = np.take(embeddings, codes.reshape(-1), axis=0).reshape(len(codes), 4, 4, -1)
    x = _relu(conv(x, "decoder.0"))
    for block in ("decoder.2.net", "decoder.3.net"):
        original = x
        y = _relu(conv(x, block + ".0", padding=1))
        y = _relu(conv(y, block + ".2", padding=1))
        x = conv(y, block + ".4") + original
    for name in ("decoder.4", "decoder.6", "decoder.8", "decoder.10"):
        x = _relu(_flax_conv_transpose(x, _transp(p[name + ".weight"]), p[name + ".bias"]))
    out: np.ndarray = conv(x, "decoder.12")[..., 0]
    return out


def random_state(seed: int) -> dict[str, np.ndarray]:
    """Random weights in the vae-oid.npz layout, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in decoder_shapes().items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        state[key] = (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
    state["_vq_vae._embedding"] = rng.standard_normal((128, 512)).astype(np.float32)
    return state


def save(path: Path, state: dict[str, np.ndarray]) -> Path:
    np.savez(path, **state)  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_decoder_matches_the_flax_reference(tmp_path: Path, seed: int) -> None:
    state = random_state(seed)
    # The real file also holds the encoder and EMA buffers; decoding ignores them.
    state["encoder.0.weight"] = np.ones((8, 1, 4, 4), dtype=np.float32)
    state["_vq_vae._ema_w"] = np.ones((128, 512), dtype=np.float32)
    decoder = load_mask_decoder(save(tmp_path / "vae.npz", state))
    rng = np.random.default_rng(100 + seed)
    grids = [
        rng.integers(0, 128, size=(3, 16)),
        np.zeros((1, 16), dtype=np.int64),
        np.full((1, 16), 127),
        np.arange(16)[None, :] * 8,  # every row and column distinct: catches a transpose
    ]
    for codes in grids:
        ours = decode_masks(decoder, codes.tolist())
        want = np.clip(reference_decode(state, codes), -1, 1)
        assert ours.shape == (len(codes), 64, 64)
        assert np.abs(ours - want).max() < 1e-4
        # Not a vacuous match: the masks differ between code groups and are not flat.
        assert want.std() > 0.01


def test_the_grid_is_row_major_channels_last(tmp_path: Path) -> None:
    # A transposed grid would give the same masks for a code group and its transpose.
    state = random_state(5)
    decoder = load_mask_decoder(save(tmp_path / "vae.npz", state))
    codes = np.arange(16).reshape(4, 4) * 7
    a, b = decode_masks(decoder, [codes.reshape(-1).tolist(), codes.T.reshape(-1).tolist()])
    assert np.abs(a - b).max() > 0.01
    assert np.abs(a - np.clip(reference_decode(state, codes.reshape(1, 16)), -1, 1)[0]).max() < 1e-4


def test_a_missing_key_is_refused_in_one_line(tmp_path: Path) -> None:
    state = random_state(3)
    del state["decoder.6.weight"]
    with pytest.raises(ModelLoadError) as info:
        load_mask_decoder(save(tmp_path / "vae.npz", state))
    assert "decoder.6.weight" in str(info.value) and "\n" not in str(info.value)


def test_a_misshaped_key_is_refused(tmp_path: Path) -> None:
    state = random_state(3)
    state["decoder.8.weight"] = np.zeros((32, 64, 4, 4), dtype=np.float32)  # in/out swapped
    with pytest.raises(ModelLoadError, match=r"decoder\.8\.weight.*\(64, 32, 4, 4\)"):
        load_mask_decoder(save(tmp_path / "vae.npz", state))


def test_a_file_that_is_not_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vae.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ModelLoadError, match="cannot read mask decoder"):
        load_mask_decoder(path)


def test_decoder_stays_float32() -> None:
    decoder = MaskDecoder()
    assert all(p.dtype == torch.float32 for p in decoder.state_dict().values())


def test_segment_results_with_and_without_a_decoder(tmp_path: Path) -> None:
    decoder = load_mask_decoder(save(tmp_path / "vae.npz", random_state(4)))
    codes = "".join(f"<seg{c:03d}>" for c in range(16))
    text = f"<loc0100><loc0200><loc0500><loc0600>{codes} cat ; "
    text += "<loc0000><loc0000><loc0512><loc0512> dog"
    segments, note = segment_results(decoder, text, 1024, 512)
    assert note == ""
    assert [(s.label, s.box) for s in segments] == [
        ("cat", (200, 50, 600, 250)),
        ("dog", (0, 0, 512, 256)),
    ]
    assert segments[0].mask is not None and segments[1].mask is None
    want = np.clip(reference_decode(random_state(4), np.arange(16)[None]), -1, 1)[0]
    levels = np.asarray(decode_mask(segments[0].mask), dtype=np.float64) / 127.5 - 1
    assert np.abs(levels - want).max() <= 1 / 127.5 + 1e-6
    boxes_only, note = segment_results(None, text, 1024, 512)
    assert [s.mask for s in boxes_only] == [None, None]
    assert "python -m inference.fetch_mask_decoder" in note and "MASK_DECODER" in note


def test_hostile_model_output_is_capped_before_decoding(tmp_path: Path) -> None:
    decoder = load_mask_decoder(save(tmp_path / "vae.npz", random_state(6)))
    codes = "".join(f"<seg{c:03d}>" for c in range(16))
    one = f"<loc0000><loc0000><loc0100><loc0100>{codes} {'@everyone ' * 1000}"
    segments, _ = segment_results(decoder, " ; ".join([one] * 400), 5000, 5000)
    assert len(segments) == MAX_SEGMENTS
    assert all(s.mask is not None and len(s.mask) <= MAX_MASK_CHARS for s in segments)
    assert all(len(s.label) <= MAX_LABEL_CHARS for s in segments)
    garbage, note = segment_results(decoder, "<seg999><loc><eos>" * 5000 + "<seg12" * 9, 9, 9)
    assert garbage == () and note == ""
