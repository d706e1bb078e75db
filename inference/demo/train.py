"""Train the tiny demo PaliGemma 2 on synthetic shapes (caption, describe, answer, detect).

Fixed seeds; runs on 2 CPU cores in minutes. `scripts/train_demo_model.py` is the entry.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from transformers import PaliGemmaProcessor

from inference.demo import shapes
from inference.demo.build import (
    IMAGE_SIZE,
    PATCH_SIZE,
    build_model,
    build_processor,
    build_tokenizer,
)
from inference.detection import LOC_BINS, Detection, format_detections

log = logging.getLogger(__name__)

TRAIN_SEED = 1234


@dataclass(frozen=True, slots=True)
class PatchTargets:
    """Per-patch truth for the auxiliary vision loss: which shape kind and colour covers
    each patch centre (0 = background), and that shape's box in 0..1 coordinates."""

    kind: torch.Tensor  # (patches,) long
    color: torch.Tensor  # (patches,) long
    box: torch.Tensor  # (patches, 4) float, zeros on background


@dataclass(frozen=True, slots=True)
class Example:
    """One training row, already tokenized (unpadded, 1-D tensors)."""

    scene: int  # index of its picture's pixel values
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor  # 1 on the target (the supervised part), 0 on the prompt
    patches: PatchTargets


def patch_targets(scene: shapes.Scene, grid: int) -> PatchTargets:
    """Sample a label map of the scene at the centre of each image patch."""
    width, height = scene.image.size
    label_map = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(label_map)
    for i, shape in enumerate(scene.shapes, start=1):
        shapes.draw_shape(draw, shape, fill=i)
    kinds, colors, boxes = [], [], []
    for row in range(grid):
        for col in range(grid):
            x = min(width - 1, int((col + 0.5) * width / grid))
            y = min(height - 1, int((row + 0.5) * height / grid))
            index = int(label_map.getpixel((x, y)) or 0)  # type: ignore[arg-type]
            if index == 0:
                kinds.append(0)
                colors.append(0)
                boxes.append([0.0, 0.0, 0.0, 0.0])
                continue
            shape = scene.shapes[index - 1]
            kinds.append(1 + shapes.SHAPES.index(shape.kind))
            colors.append(1 + list(shapes.COLORS).index(shape.color))
            x0, y0, x1, y1 = shape.box
            boxes.append([x0 / width, y0 / height, x1 / width, y1 / height])
    return PatchTargets(torch.tensor(kinds), torch.tensor(colors), torch.tensor(boxes))


class VisionProbe(torch.nn.Module):
    """Linear heads on the vision tower's patch features, used only while training.

    They give the vision tower a dense, direct signal (what shape, what colour, which box
    covers this patch) instead of only what trickles back through the decoder's
    attention; without it a tiny model takes far longer to tell a circle from a square.
    The heads are thrown away: the saved checkpoint is a plain PaliGemma.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.kind = torch.nn.Linear(hidden, 1 + len(shapes.SHAPES))
        self.color = torch.nn.Linear(hidden, 1 + len(shapes.COLORS))
        self.box = torch.nn.Linear(hidden, 4)

    def loss(self, features: torch.Tensor, targets: list[PatchTargets]) -> torch.Tensor:
        kind = torch.stack([t.kind for t in targets])
        color = torch.stack([t.color for t in targets])
        box = torch.stack([t.box for t in targets])
        ce = torch.nn.functional.cross_entropy
        loss = ce(self.kind(features).flatten(0, 1), kind.flatten())
        loss = loss + ce(self.color(features).flatten(0, 1), color.flatten())
        on_shape = kind > 0
        if bool(on_shape.any()):
            loss = loss + 10 * torch.nn.functional.l1_loss(
                self.box(features)[on_shape], box[on_shape]
            )
        return loss


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
        dets = [
            Detection(x.kind, x.box) for x in sorted(scene.of_kind(s.kind), key=lambda x: x.box)
        ]
        pairs.append((f"detect {s.kind}", format_detections(dets, w, h)))
    # One yes/no question per scene (not one per kind): every example costs the same 64
    # image tokens, so the budget goes to the harder detect, colour and caption targets.
    kind = rng.choice(shapes.SHAPES)
    pairs.append((f"answer en is there a {kind}?", "yes" if scene.of_kind(kind) else "no"))
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


def soft_location_loss(
    logits: torch.Tensor, labels: torch.Tensor, loc0: int, sigma_bins: float
) -> torch.Tensor:
    """Next-token cross-entropy where a location target is a Gaussian over nearby bins.

    With one-hot targets a box one bin off is as wrong as one across the image, and a
    tiny model needs many thousands of steps to find any signal; soft targets reward
    "close", which made boxes learnable in a few hundred steps in our trials.
    """
    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits[mask], dim=-1)
    target = labels[mask]
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    is_loc = (target >= loc0) & (target < loc0 + LOC_BINS)
    if bool(is_loc.any()):
        bins = torch.arange(LOC_BINS, dtype=logp.dtype)
        centre = (target[is_loc] - loc0).to(logp.dtype)
        weights = torch.exp(-0.5 * ((bins[None, :] - centre[:, None]) / sigma_bins) ** 2)
        weights = weights / weights.sum(dim=1, keepdim=True)
        soft = -(weights * logp[is_loc][:, loc0 : loc0 + LOC_BINS]).sum(dim=1)
        nll = nll.masked_scatter(is_loc, soft)
    return nll.mean()


def encode_scene(
    processor: PaliGemmaProcessor, image: Image.Image, pairs: list[tuple[str, str]]
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """One picture's pixel values and each (prompt, target) pair's unpadded tokens.

    Done once per scene, so a training step only pads and stacks. The text goes through
    the tokenizer with the processor's own layout (image tokens, bos, prompt, newline;
    the target and eos as the second segment) instead of through the processor, which
    would normalise the same picture once per pair: half of the set-up time.
    `tests/demo/test_train.py` holds this to the processor's output.
    """
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"][0]
    tokenizer = processor.tokenizer
    prefix = processor.image_token * processor.image_seq_length + tokenizer.bos_token
    enc = tokenizer(
        [prefix + prompt + "\n" for prompt, _ in pairs],
        text_pair=[target + tokenizer.eos_token for _, target in pairs],
        return_token_type_ids=True,
    )
    rows = [
        {"input_ids": torch.tensor(ids), "token_type_ids": torch.tensor(types)}
        for ids, types in zip(enc["input_ids"], enc["token_type_ids"], strict=True)
    ]
    return pixel_values, rows


def collate(
    batch: list[Example], pixels: list[torch.Tensor], pad_id: int
) -> dict[str, torch.Tensor]:
    """Left-pad a batch exactly as the processor's padding="longest" does."""
    longest = max(len(e.input_ids) for e in batch)

    def pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
        return torch.stack(
            [torch.nn.functional.pad(r, (longest - len(r), 0), value=value) for r in rows]
        )

    input_ids = pad([e.input_ids for e in batch], pad_id)
    token_type_ids = pad([e.token_type_ids for e in batch], 0)
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": pad([torch.ones_like(e.input_ids) for e in batch], 0),
        "pixel_values": torch.stack([pixels[e.scene] for e in batch]),
        # As the processor does: only the target is supervised; padding is type 0 too.
        "labels": input_ids.where(token_type_ids == 1, -100),
    }


@dataclass(frozen=True, slots=True)
class Pool:
    """Every training row with the pixel values they index."""

    pixels: list[torch.Tensor]
    rows: list[Example]
    detects: list[Example]  # rows that ask for boxes
    singles: list[Example]  # rows whose picture holds one shape (the warm-up's)
    segments: list[Example]  # rows that ask for masks (the second stage's, finetune.py)


def build_pool(
    processor: PaliGemmaProcessor,
    rng: random.Random,
    n_scenes: int,
    pairs_for: Callable[[shapes.Scene, random.Random], list[tuple[str, str]]] = examples_for,
) -> Pool:
    """Render, shrink and encode each picture once; steps then only pad and stack."""
    pool = Pool(pixels=[], rows=[], detects=[], singles=[], segments=[])
    for index in range(n_scenes):
        scene = shapes.make_scene(rng, size=_random_size(rng))
        small = scene.image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        targets = patch_targets(scene, IMAGE_SIZE // PATCH_SIZE)
        pairs = pairs_for(scene, rng)
        pixel_values, encoded = encode_scene(processor, small, pairs)
        pool.pixels.append(pixel_values)
        for (prompt, _), row in zip(pairs, encoded, strict=True):
            example = Example(index, patches=targets, **row)
            pool.rows.append(example)
            if prompt.startswith("detect "):
                pool.detects.append(example)
            if prompt.startswith("segment "):
                pool.segments.append(example)
            if len(scene.shapes) == 1:
                pool.singles.append(example)
    log.info(
        "training pool: %d rows (%d detect, %d of one-shape pictures)",
        len(pool.rows),
        len(pool.detects),
        len(pool.singles),
    )
    return pool


def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    out_dir: Path,
    *,
    steps: int = 3600,
    batch_size: int = 32,
    lr: float = 2e-3,
    n_scenes: int = 4000,
    seed: int = TRAIN_SEED,
    warmup_single_fraction: float = 0.15,
    sigma_bins: float = 10.0,
    final_sigma_bins: float = 3.0,
    aux_weight: float = 0.5,
    detect_share: float = 0.7,
    bf16: bool = True,
) -> None:
    """Build, train and save the demo checkpoint to out_dir."""
    started = time.monotonic()  # the whole run: building the pool is part of the cost
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = build_tokenizer(corpus())
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, seed=seed)
    loc0 = tokenizer.convert_tokens_to_ids("<loc0000>")
    params = sum(p.numel() for p in model.parameters())
    log.info("demo model: %d parameters, vocab %d", params, len(tokenizer))

    pool = build_pool(processor, rng, n_scenes)
    probe = VisionProbe(model.config.vision_config.hidden_size)
    captured: list[torch.Tensor] = []
    hook = model.model.vision_tower.register_forward_hook(
        lambda _module, _args, output: captured.append(output.last_hidden_state)
    )
    params = [*model.parameters(), *probe.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    for step in range(steps):
        # A short warm-up on one-shape pictures teaches "where is the shape" before
        # "which one is the circle". Batches mix tasks on purpose: same-task batches never
        # teach the model to tell tasks apart by the prompt.
        if step < steps * warmup_single_fraction:
            batch = rng.sample(pool.singles, batch_size)
        else:
            # Boxes are the hardest target: drawing rows uniformly (a third of them
            # detect) left boxes below 80% IoU >= 0.5 on held-out pictures; with 50-70%
            # detect rows they reached 92-100% in our trials.
            n_detect = round(batch_size * detect_share)
            batch = rng.sample(pool.detects, n_detect) + rng.sample(
                pool.rows, batch_size - n_detect
            )
        inputs = collate(batch, pool.pixels, tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=100)
        labels = inputs.pop("labels")
        captured.clear()
        # Wide targets first find the right area; narrowing them later sharpens the box.
        sigma = sigma_bins + (final_sigma_bins - sigma_bins) * step / max(1, steps - 1)
        # Only the answer is supervised and, with left padding, every answer ends the
        # row: projecting just the last `keep` positions onto the vocabulary skips the
        # image tokens' logits, the largest tensor in the step.
        keep = labels.shape[1] - int((labels != -100).any(dim=0).nonzero()[0]) + 1
        # bf16 matmuls (autocast keeps the weights, the optimiser and the losses' softmax
        # in float32) cut the step time by about an eighth on CPUs with AVX-512 bf16.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs, logits_to_keep=keep).logits
            loss = soft_location_loss(logits, labels[:, -keep:], loc0, sigma)
            loss = loss + aux_weight * probe.loss(captured[0], [e.patches for e in batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log.info(
                "step %d/%d loss %.4f (%.0fs)", step, steps, loss.item(), time.monotonic() - started
            )
    hook.remove()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    log.info("saved to %s after %.0fs", out_dir, time.monotonic() - started)
