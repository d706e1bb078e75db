"""Train the tiny demo PaliGemma 2 on synthetic shapes (caption, describe, answer, detect).

Fixed seeds; runs on 2 CPU cores in minutes. `scripts/train_demo_model.py` is the entry.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from inference.demo import shapes
from inference.demo.build import IMAGE_SIZE, build_model, build_processor, build_tokenizer
from inference.detection import Detection, format_detections

log = logging.getLogger(__name__)

TRAIN_SEED = 1234


@dataclass(frozen=True, slots=True)
class Example:
    image: Image.Image
    prompt: str
    target: str


def _random_size(rng: random.Random) -> tuple[int, int]:
    # Mostly square-ish, sometimes wide or tall, so box scaling to the original size is
    # learned and tested on non-square pictures too.
    return rng.randint(128, 320), rng.randint(128, 320)


def examples_for(scene: shapes.Scene, rng: random.Random) -> list[tuple[str, str]]:
    """All (prompt, target) pairs one scene can teach."""
    pairs = [("caption en", shapes.caption(scene)), ("describe en", shapes.description(scene))]
    n = len(scene.shapes)
    pairs.append(("answer en how many shapes are there?", shapes.NUMBER_WORDS[n]))
    w, h = scene.image.size
    for s in scene.shapes:
        pairs.append((f"answer en what color is the {s.kind}?", s.color))
        pairs.append((f"answer en is there a {s.kind}?", "yes"))
        dets = [
            Detection(x.kind, x.box) for x in sorted(scene.of_kind(s.kind), key=lambda x: x.box)
        ]
        pairs.append((f"detect {s.kind}", format_detections(dets, w, h)))
    absent = [k for k in shapes.SHAPES if not scene.of_kind(k)]
    for k in absent:
        pairs.append((f"answer en is there a {k}?", "no"))
    if n >= 2:
        kinds = [s.kind for s in scene.shapes]
        rng.shuffle(kinds)
        dets = [Detection(s.kind, s.box) for k in kinds for s in scene.of_kind(k)]
        pairs.append(("detect " + " ; ".join(kinds), format_detections(dets, w, h)))
    return pairs


def corpus(n_scenes: int = 400) -> list[str]:
    """Text the tokenizer is trained on (prompts and targets, no location tokens)."""
    rng = random.Random(7)
    lines = []
    for _ in range(n_scenes):
        scene = shapes.make_scene(rng, size=(96, 96))
        for prompt, target in examples_for(scene, rng):
            lines.append(prompt)
            if not target.startswith("<loc"):
                lines.append(target)
    return lines


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    out_dir: Path,
    *,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 2e-3,
    n_scenes: int = 4000,
    seed: int = TRAIN_SEED,
) -> None:
    """Build, train and save the demo checkpoint to out_dir."""
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = random.Random(seed)
    tokenizer = build_tokenizer(corpus())
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, seed=seed)
    params = sum(p.numel() for p in model.parameters())
    log.info("demo model: %d parameters, vocab %d", params, len(tokenizer))

    # Render once, shrink once: the processor then only normalises.
    pool: list[Example] = []
    for _ in range(n_scenes):
        scene = shapes.make_scene(rng, size=_random_size(rng))
        small = scene.image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        pool.extend(Example(small, p, t) for p, t in examples_for(scene, rng))
    log.info("training pool: %d examples from %d scenes", len(pool), n_scenes)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    started = time.monotonic()
    for step in range(steps):
        batch = rng.sample(pool, batch_size)
        inputs = processor(
            images=[e.image for e in batch],
            text=["<image>" + e.prompt for e in batch],
            suffix=[e.target for e in batch],
            return_tensors="pt",
            padding="longest",
        )
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=100)
        loss = model(**inputs).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "step %d/%d loss %.4f (%.0fs)", step, steps, loss.item(), time.monotonic() - started
            )
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    log.info("saved to %s after %.0fs", out_dir, time.monotonic() - started)
