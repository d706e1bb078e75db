"""big_vision's segmentation mask decoder (`vae-oid.npz`) in torch: 16 codes to a 64×64 mask.

PaliGemma answers `segment` with 16 `<segNNN>` codes per object; the VQ-VAE decoder that
turns them into a mask is not in transformers. This is a port of big_vision's
`evaluators/proj/paligemma/transfers/segmentation.py`: the file is a PyTorch state_dict
saved with `np.savez`, so its decoder keys load here as they are (torch's own layouts),
and `tests/engine/test_masks.py` holds this module to an independent numpy rendering of
big_vision's Flax code on random weights of the same layout. The module is kept in
float32 on the worker's device whatever dtype the language model runs in: it is small
(about 1M parameters) and the masks are thresholded at 0, where bf16 rounding would move
edges.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inference.detection import Detection
from inference.errors import ModelLoadError
from inference.segmentation import pack_mask, parse_segments
from inference.settings import EngineSettings

log = logging.getLogger(__name__)

CODEBOOK_SIZE = 128
EMBEDDING_DIM = 512
CODES_PER_MASK = 16  # a 4×4 grid, row-major
GRID = 4
MASK_SIZE = 64
DEFAULT_FILE = "mask_decoder.npz"  # looked for in a local model's folder
MISSING_DECODER_NOTE = (
    "Masks need PaliGemma's mask decoder, which this worker does not have: its operator "
    "can get it with `python -m inference.fetch_mask_decoder` and set MASK_DECODER. "
    "Here are the boxes."
)

# Every decoder key of vae-oid.npz with its shape (torch layouts: Conv2d (out, in, kH, kW),
# ConvTranspose2d (in, out, kH, kW)). The file's encoder keys are not needed to decode.
_UPSAMPLE = {"decoder.4": (128, 128), "decoder.6": (128, 64), "decoder.8": (64, 32)}
_UPSAMPLE["decoder.10"] = (32, 16)


def decoder_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes a mask decoder file must hold."""
    shapes: dict[str, tuple[int, ...]] = {
        "_vq_vae._embedding": (CODEBOOK_SIZE, EMBEDDING_DIM),
        "decoder.0.weight": (128, EMBEDDING_DIM, 1, 1),
        "decoder.0.bias": (128,),
        "decoder.12.weight": (1, 16, 1, 1),
        "decoder.12.bias": (1,),
    }
    for block in ("decoder.2", "decoder.3"):
        for conv, k in (("net.0", 3), ("net.2", 3), ("net.4", 1)):
            shapes[f"{block}.{conv}.weight"] = (128, 128, k, k)
            shapes[f"{block}.{conv}.bias"] = (128,)
    for name, (c_in, c_out) in _UPSAMPLE.items():
        shapes[f"{name}.weight"] = (c_in, c_out, 4, 4)
        shapes[f"{name}.bias"] = (c_out,)
    return shapes


class _ResBlock(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(channels, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)  # type: ignore[no-any-return]


class MaskDecoder(torch.nn.Module):
    """Codes (N, 16) in 0..127 to masks (N, 64, 64) in about [-1, 1]; foreground > 0.

    Module names follow the state_dict's keys (`decoder.0` … `decoder.12`, the ReLUs
    included in the numbering), so `load_state_dict` takes vae-oid.npz's arrays unrenamed.
    """

    codebook: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # A buffer, not a parameter: the decoder only looks codes up.
        self.register_buffer("codebook", torch.zeros(CODEBOOK_SIZE, EMBEDDING_DIM))
        layers: list[torch.nn.Module] = [
            torch.nn.Conv2d(EMBEDDING_DIM, 128, 1),
            torch.nn.ReLU(),
            _ResBlock(128),
            _ResBlock(128),
        ]
        for c_in, c_out in _UPSAMPLE.values():
            layers += [torch.nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
            layers += [torch.nn.ReLU()]
        layers.append(torch.nn.Conv2d(16, 1, 1))
        self.decoder = torch.nn.Sequential(*layers)

    def decode_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """Decode (N, 512, 4, 4) embeddings (what training feeds) to (N, 64, 64) masks."""
        return self.decoder(grid)[:, 0]  # type: ignore[no-any-return]

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        embedded = self.codebook[codes.reshape(-1, CODES_PER_MASK)]  # (N, 16, 512)
        # Row-major 4×4, channels last, as big_vision lays them out; torch wants NCHW.
        grid = embedded.reshape(-1, GRID, GRID, EMBEDDING_DIM).permute(0, 3, 1, 2)
        return self.decode_grid(grid)

    def state_for_file(self) -> dict[str, np.ndarray]:
        """This decoder's weights under vae-oid.npz's key names (the inverse of loading)."""
        state = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        state["_vq_vae._embedding"] = state.pop("codebook")
        return state


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read a .npz without executing anything it holds (no pickled objects)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read mask decoder {path}: {exc}") from exc


def check_arrays(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """Raise ModelLoadError (one line) unless every decoder key is there with its shape."""
    for key, shape in decoder_shapes().items():
        if key not in arrays:
            raise ModelLoadError(f"mask decoder {source} has no {key!r}: not a vae-oid.npz file")
        array = arrays[key]
        if tuple(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
            raise ModelLoadError(
                f"mask decoder {source}: {key!r} is {array.dtype} {tuple(array.shape)}, "
                f"expected float {shape}"
            )


def load_mask_decoder(path: Path, device: torch.device | str = "cpu") -> MaskDecoder:
    """Load the decoder keys of a vae-oid.npz file (others, e.g. the encoder's, ignored)."""
    arrays = load_arrays(path)
    check_arrays(arrays, str(path))
    state = {
        key: torch.from_numpy(np.asarray(arrays[key], dtype=np.float32)) for key in decoder_shapes()
    }
    state["codebook"] = state.pop("_vq_vae._embedding")
    decoder = MaskDecoder()
    decoder.load_state_dict(state, strict=True)
    decoder.eval()
    log.info("mask decoder loaded from %s", path)
    return decoder.to(device=device, dtype=torch.float32)


@torch.inference_mode()
def decode_masks(decoder: MaskDecoder, codes: Sequence[Sequence[int]]) -> np.ndarray:
    """Masks (N, 64, 64) float32 in [-1, 1] for N code groups (each 16 values in 0..127)."""
    if not codes:
        return np.zeros((0, MASK_SIZE, MASK_SIZE), dtype=np.float32)
    device = decoder.codebook.device
    batch = torch.tensor([list(c) for c in codes], dtype=torch.long, device=device)
    # The decoder has no tanh; its output is about [-1, 1] and only its sign matters.
    return decoder(batch).clamp(-1.0, 1.0).float().cpu().numpy()  # type: ignore[no-any-return]


def encode_mask(mask: np.ndarray) -> str:
    """A 64×64 decoder output in [-1, 1] packed for the queue (`segmentation.pack_mask`):
    one byte a pixel, 0 ↦ 128, so foreground is >= 128 and the bot needs no numpy."""
    if mask.shape != (MASK_SIZE, MASK_SIZE):
        raise ValueError(f"a mask is {MASK_SIZE}x{MASK_SIZE}, got {mask.shape}")
    levels = np.clip(np.rint((np.asarray(mask, np.float64) + 1.0) * 127.5), 0, 255)
    return pack_mask(Image.fromarray(levels.astype(np.uint8), mode="L"))


def mask_decoder_for(settings: EngineSettings, device: torch.device) -> MaskDecoder | None:
    """The decoder MASK_DECODER names, else the model folder's mask_decoder.npz, else None
    (segment answers then come with boxes only). A named file that fails to load is an
    error at start-up, not a silent loss of masks."""
    path = settings.mask_decoder
    if path is None:
        beside = Path(settings.model_id).expanduser() / DEFAULT_FILE
        if not beside.is_file():
            log.info("no mask decoder: segment answers will have boxes only")
            return None
        path = beside
    return load_mask_decoder(path, device)


def segment_results(
    decoder: MaskDecoder | None, text: str, width: int, height: int
) -> tuple[tuple[Detection, ...], str]:
    """Segments of a `segment` answer as detections with packed masks, and a note for the
    user ("" unless masks were asked for and this worker cannot decode them)."""
    parsed = parse_segments(text, width, height)
    coded = [p for p in parsed if p.codes is not None]
    if decoder is None:
        note = MISSING_DECODER_NOTE if coded else ""
        return tuple(Detection(p.label, p.box) for p in parsed), note
    decoded = iter(decode_masks(decoder, [p.codes for p in coded if p.codes is not None]))
    out = []
    for p in parsed:
        mask = None if p.codes is None else encode_mask(next(decoded))
        out.append(Detection(p.label, p.box, mask))
    return tuple(out), ""
