"""Second training stage of the demo model: teach it `segment <shape>`.

Starts from the first stage's saved checkpoint (`train.train`) and the mask VQ-VAE
(`masks.train_mask_vae`), and trains on a mix of segment rows and the first stage's own
rows, so that what the model already knew (boxes, colours, captions) is rehearsed while
it learns to follow each box with the 16 codes the VQ-VAE's encoder gives the shape's
mask. Loading the first stage from disk (not continuing in memory) makes this stage
reproducible on its own from the committed files: `scripts/train_demo_model.py
--stage segment`.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor

from inference.demo import shapes
from inference.demo.masks import ShapeCoder
from inference.demo.train import _lr_at, build_pool, collate, examples_for, soft_location_loss
from inference.detection import box_to_loc_tokens

log = logging.getLogger(__name__)

SEGMENT_SEED = 2468
MASK_DECODER_FILE = "mask_decoder.npz"


def segment_target(coder: ShapeCoder, shape: shapes.Shape, width: int, height: int) -> str:
    """PaliGemma's answer for one shape: 4 loc tokens, 16 seg tokens, the label."""
    x0, y0, x1, y1 = shape.box
    codes = "".join(f"<seg{c:03d}>" for c in coder.codes(shape.kind, x1 - x0, y1 - y0))
    return f"{box_to_loc_tokens(shape.box, width, height)}{codes} {shape.kind}"


def segment_pairs(
    coder: ShapeCoder, scene: shapes.Scene, rng: random.Random
) -> list[tuple[str, str]]:
    """A scene's first-stage pairs plus a segment prompt per shape (and one for all)."""
    pairs = examples_for(scene, rng)
    w, h = scene.image.size
    for shape in scene.shapes:
        pairs.append((f"segment {shape.kind}", segment_target(coder, shape, w, h)))
    if len(scene.shapes) >= 2:
        ordered = list(scene.shapes)
        rng.shuffle(ordered)
        text = " ; ".join(segment_target(coder, s, w, h) for s in ordered)
        pairs.append(("segment " + " ; ".join(s.kind for s in ordered), text))
    return pairs


def finetune(
    out_dir: Path,
    *,
    steps: int = 900,
    batch_size: int = 32,
    lr: float = 5e-4,
    n_scenes: int = 2000,
    segment_share: float = 0.4,
    detect_share: float = 0.25,
    sigma_bins: float = 3.0,
    bf16: bool = True,
) -> None:
    """Teach the checkpoint in out_dir to segment, and save it there again."""
    started = time.monotonic()
    torch.manual_seed(SEGMENT_SEED)
    rng = random.Random(SEGMENT_SEED)
    coder = ShapeCoder(out_dir / MASK_DECODER_FILE)
    processor = PaliGemmaProcessor.from_pretrained(out_dir)
    model = PaliGemmaForConditionalGeneration.from_pretrained(out_dir, dtype=torch.float32)
    tokenizer = processor.tokenizer
    loc0 = tokenizer.convert_tokens_to_ids("<loc0000>")
    pool = build_pool(processor, rng, n_scenes, lambda s, r: segment_pairs(coder, s, r))
    log.info("segment rows: %d", len(pool.segments))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    n_segment = round(batch_size * segment_share)
    n_detect = round(batch_size * detect_share)
    for step in range(steps):
        # Rehearsing detect and the other tasks keeps the first stage's skills; without
        # them a stage of segment rows alone lets colour answers drift.
        batch = (
            rng.sample(pool.segments, n_segment)
            + rng.sample(pool.detects, n_detect)
            + rng.sample(pool.rows, batch_size - n_segment - n_detect)
        )
        inputs = collate(batch, pool.pixels, tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=50)
        labels = inputs.pop("labels")
        keep = labels.shape[1] - int((labels != -100).any(dim=0).nonzero()[0]) + 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs, logits_to_keep=keep).logits
            loss = soft_location_loss(logits, labels[:, -keep:], loc0, sigma_bins)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "segment step %d/%d loss %.4f (%.0fs)",
                step,
                steps,
                loss.item(),
                time.monotonic() - started,
            )
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    log.info("segment stage saved to %s after %.0fs", out_dir, time.monotonic() - started)
