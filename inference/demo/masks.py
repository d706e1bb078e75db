"""A tiny VQ-VAE for the demo's shape masks, saved in big_vision's `vae-oid.npz` layout.

PaliGemma's real mask decoder cannot be downloaded here, so the demo gets its own: the
decoder is `inference.engine.masks.MaskDecoder` (the same architecture and keys as
vae-oid.npz), trained with a small encoder on the masks of the demo's shapes, each cut to
its box and resized to 64×64 as PaliGemma's masks are. The encoder (saved under
`encoder.*`, which decoding ignores, as in the real file) gives the 16 codes the demo
model is taught to answer `segment <shape>` with. Fixed seed; under a minute on 2 cores.
"""

from __future__ import annotations

import logging
import random
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from inference.demo import shapes
from inference.engine.masks import (
    CODEBOOK_SIZE,
    EMBEDDING_DIM,
    MASK_SIZE,
    MaskDecoder,
    load_arrays,
)

log = logging.getLogger(__name__)

VAE_SEED = 4321
COMMITMENT = 0.25


def box_mask(kind: str, width: int, height: int) -> np.ndarray:
    """A shape drawn to fill a width × height box, resized to 64×64: 1 inside, 0 outside."""
    canvas = Image.new("L", (width, height), 0)
    shape = shapes.Shape(kind, "red", (0, 0, width, height))
    shapes.draw_shape(ImageDraw.Draw(canvas), shape, fill=255)
    small = canvas.resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


class MaskEncoder(torch.nn.Module):
    """64×64 mask to a 4×4 grid of 512-d vectors (four stride-2 convolutions)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 4, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 4, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 4, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 128, 4, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(128, EMBEDDING_DIM, 1),
        )

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.net(masks[:, None] * 2 - 1)  # type: ignore[no-any-return]


def nearest_codes(grid: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, 512, 4, 4) vectors to (N, 16) codebook indices, row-major over the grid."""
    flat = grid.permute(0, 2, 3, 1).reshape(-1, EMBEDDING_DIM)
    distance = torch.cdist(flat, codebook)
    return distance.argmin(dim=1).reshape(grid.shape[0], -1)


def _batch(rng: random.Random, size: int) -> torch.Tensor:
    masks = []
    for _ in range(size):
        kind = rng.choice(shapes.SHAPES)
        masks.append(box_mask(kind, rng.randint(20, 160), rng.randint(20, 160)))
    return torch.from_numpy(np.stack(masks))


def train_mask_vae(
    out_path: Path, *, steps: int = 400, batch_size: int = 24, lr: float = 1e-3
) -> None:
    """Train the VQ-VAE and save it as a vae-oid.npz-layout file (decoder + encoder)."""
    started = time.monotonic()
    # One thread: with two, oneDNN's convolution gradients came out different from run to
    # run (the language model is reproducible on two; this small network is not), and a
    # few seconds more buys a file that a rerun reproduces byte for byte.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(out_path, steps=steps, batch_size=batch_size, lr=lr)
    finally:
        torch.set_num_threads(threads)
    log.info("mask VQ-VAE saved to %s after %.0fs", out_path, time.monotonic() - started)


def _train(out_path: Path, *, steps: int, batch_size: int, lr: float) -> None:
    torch.manual_seed(VAE_SEED)
    rng = random.Random(VAE_SEED)
    encoder, decoder = MaskEncoder(), MaskDecoder()
    codebook = torch.nn.Parameter(torch.randn(CODEBOOK_SIZE, EMBEDDING_DIM) * 0.1)
    params = [*encoder.parameters(), *decoder.parameters(), codebook]
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        masks = _batch(rng, batch_size)
        grid = encoder(masks)
        if step == 0:
            # Codes start as encoder outputs (a k-means-style start): a random codebook
            # far from them leaves all but one or two codes unused, and masks collapse.
            with torch.no_grad():
                flat = grid.permute(0, 2, 3, 1).reshape(-1, EMBEDDING_DIM)
                picked = torch.randperm(len(flat))[:CODEBOOK_SIZE]
                codebook.copy_(flat[picked] + 0.01 * torch.randn_like(flat[picked]))
        codes = nearest_codes(grid.detach(), codebook.detach())
        quantised = codebook[codes].reshape(len(masks), 4, 4, -1).permute(0, 3, 1, 2)
        # Straight-through: the decoder sees the codebook's vectors, the encoder gets
        # their gradient; the two MSE terms pull codebook and encoder together.
        passed = grid + (quantised - grid).detach()
        recon = decoder.decode_grid(passed)
        loss = torch.nn.functional.mse_loss(recon, masks * 2 - 1)
        loss = loss + torch.nn.functional.mse_loss(quantised, grid.detach())
        loss = loss + COMMITMENT * torch.nn.functional.mse_loss(grid, quantised.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("vq-vae step %d/%d loss %.4f", step, steps, loss.item())
    decoder.codebook.copy_(codebook.detach())
    state = decoder.state_for_file()
    state |= {f"encoder.{k}": v.numpy() for k, v in encoder.state_dict().items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the committed file; the loader decodes in float32 whatever it reads.
    _save_npz(out_path, {k: v.astype(np.float16) for k, v in state.items()})


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's format without its one varying part, the zip entries' clock time, so
    that a rerun gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w") as entry:
                np.lib.format.write_array(entry, np.ascontiguousarray(array))


class ShapeCoder:
    """The saved encoder and codebook: a shape's mask to the 16 codes the model learns."""

    def __init__(self, path: Path) -> None:
        arrays = load_arrays(path)
        self.encoder: MaskEncoder = MaskEncoder()
        prefix = "encoder."
        self.encoder.load_state_dict(
            {
                k[len(prefix) :]: torch.from_numpy(v.astype(np.float32))
                for k, v in arrays.items()
                if k.startswith(prefix)
            }
        )
        self.codebook = torch.from_numpy(arrays["_vq_vae._embedding"].astype(np.float32))

    @torch.inference_mode()
    def codes(self, kind: str, width: int, height: int) -> list[int]:
        """The 16 codes of a `kind` filling a width × height box."""
        mask = torch.from_numpy(box_mask(kind, max(1, width), max(1, height)))[None]
        return [int(c) for c in nearest_codes(self.encoder(mask), self.codebook)[0]]
