"""GPU check for the pipelined worker: real-size PaliGemma 2 3B at 224 and 448 px, random
weights built from the configs (no download), measured side by side in one run.

    python -m bench.gpu_worker [--sizes 224,448] [--batches 1,8,32,64] [--tiny]

For each size the architecture is saved with a processor (the demo tokenizer: its ids fit
in the 257,216-entry vocab) and loaded through `load_model` like a hub checkpoint (bf16
on CUDA). Then, for each batch size:
- raw: `generate` on inputs already on the device, 20 new tokens per caption (forced), the
  device's work alone;
- worker: as many 640x480 PNG pictures through the real worker (pipelined, preparing
  processes) and a private redis-server; where the machine has no redis-server, through
  the same prepare-ahead loop in this process (the output says which);
- peak GPU memory, and the fraction of the roofline raw reaches (an estimate from the
  model's shapes and the GPU's peak bf16 FLOP/s and memory bandwidth).
Then: the engine's path (features handed to generate as `mm_encoder_outputs`, per-row
budgets) against plain eager `generate(pixel_values=...)` on a fixed input (equal text),
and an ask after a describe on the same picture with its features kept against
computed. Goals (issue 14): worker >= 0.95 of raw; raw >= 60% of the roofline at batch 32.
Writes gpu_worker.json to $OUT (or the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PaliGemmaForConditionalGeneration

from bench.gpu_throughput import config_3b
from bench.pipeline import _through_worker
from inference.demo import shapes
from inference.demo.build import build_processor, build_tokenizer
from inference.demo.shapes import encode_png
from inference.demo.train import corpus
from inference.engine.inputs import ModelInput, collate, stack_pixels
from inference.engine.loading import LoadedModel, load_model
from inference.engine.paligemma import PaliGemmaEngine
from inference.intake import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, load_image
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, TaskSpec
from sandbox.stack import choose_redis

NEW_TOKENS = 20
CAPTION = TaskSpec.build("caption", max_new_tokens=NEW_TOKENS)
# Peak dense bf16 FLOP/s and memory bytes/s by device name (vendor data sheets, SXM parts).
PEAKS = {
    "H200": (989e12, 4.8e12),
    "H100 PCIe": (756e12, 2.0e12),
    "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.0e12),
    "L40S": (362e12, 0.864e12),
    "L4": (121e12, 0.3e12),
}


def build_checkpoint(out: Path, side: int, tiny: bool) -> None:
    tokenizer = build_tokenizer(corpus(50))
    config = config_3b(side, tiny)
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    vision = config.vision_config
    build_processor(tokenizer, vision.image_size, vision.patch_size).save_pretrained(out)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def _engine(loaded: LoadedModel, batch: int, cache: bool = False) -> PaliGemmaEngine:
    return PaliGemmaEngine(
        loaded,
        max_batch_size=batch,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        feature_cache_max_bytes=(1 << 30) if cache else 0,
        prepare_processes=2,
    )


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _raw(engine: PaliGemmaEngine, loaded: LoadedModel, pictures: list[bytes], batch: int) -> float:
    """images/s of generate alone on device-ready inputs (prepared and copied beforehand)."""
    ready = engine.prepare([InferenceRequest(CAPTION, p) for p in pictures[:batch]])
    inputs = [r.prepared for r in ready if isinstance(r.prepared, ModelInput)]
    tokens = collate(inputs, pad_token_id=engine._pad_token_id, device=loaded.device)
    pixels = stack_pixels([i.pixels for i in inputs], loaded.device)
    pixels = engine._normalise(pixels, loaded.dtype)
    gen = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS, "do_sample": False}
    loaded.model.generate(**tokens, pixel_values=pixels, **gen)
    _sync()
    rounds = max(1, len(pictures) // batch)
    started = time.perf_counter()
    for _ in range(rounds):
        loaded.model.generate(**tokens, pixel_values=pixels, **gen)
    _sync()
    return rounds * batch / (time.perf_counter() - started)


def _in_process_pipeline(engine: PaliGemmaEngine, pictures: list[bytes], batch: int) -> float:
    """The worker's overlap without Redis: batch k+1 prepared while batch k generates."""
    requests = [InferenceRequest(CAPTION, p) for p in pictures]
    chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as preparing:
        upcoming = preparing.submit(engine.prepare, chunks[0])
        for k in range(len(chunks)):
            ready = upcoming.result()
            if k + 1 < len(chunks):
                upcoming = preparing.submit(engine.prepare, chunks[k + 1])
            engine.generate(ready)
    _sync()
    return len(pictures) / (time.perf_counter() - started)


@dataclass
class Roofline:
    seconds: float
    prefill_tflop: float


def roofline(
    model: Any, config: Any, batch: int, prompt_len: int, peak: tuple[float, float]
) -> Roofline:
    """The least time the device could take: compute-bound vision and prefill, then per
    generated token the larger of its FLOPs and its bytes (weights + KV cache) read."""
    flops_s, bytes_s = peak
    text, vision = config.text_config, config.vision_config
    n_img = vision.num_image_tokens
    p_vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    p_vision += sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    embed = text.vocab_size * text.hidden_size
    p_lm = sum(p.numel() for p in model.model.language_model.parameters()) - embed
    attn_width = text.num_attention_heads * text.head_dim
    kv_width = text.num_key_value_heads * text.head_dim
    f_vision = batch * (
        2 * p_vision * n_img + 4 * vision.num_hidden_layers * n_img**2 * vision.hidden_size
    )
    f_prefill = batch * (
        2 * p_lm * prompt_len + 4 * text.num_hidden_layers * prompt_len**2 * attn_width
    )
    f_prefill += batch * 2 * embed  # the logits of the last position
    total = (f_vision + f_prefill) / flops_s
    for t in range(1, NEW_TOKENS):
        context = prompt_len + t
        flops = batch * (2 * (p_lm + embed) + 4 * text.num_hidden_layers * context * attn_width)
        read = 2 * (p_lm + embed) + batch * context * text.num_hidden_layers * 2 * kv_width * 2
        total += max(flops / flops_s, read / bytes_s)
    return Roofline(total, (f_vision + f_prefill) / 1e12)


def _peak(args: argparse.Namespace) -> tuple[float, float] | None:
    if args.peak_tflops and args.peak_tbps:
        return args.peak_tflops * 1e12, args.peak_tbps * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


def _equal_to_eager(engine: PaliGemmaEngine, loaded: LoadedModel, pictures: list[bytes]) -> bool:
    """The engine's answers against plain generate(pixel_values=...) on the same input."""
    requests = [InferenceRequest(CAPTION, p) for p in pictures[:4]]
    ours = [r.text for r in engine.generate(requests)]
    processor = loaded.processor
    images = [load_image(p, target_size=loaded.image_size).image for p in pictures[:4]]
    inputs = processor(
        images=images,
        text=["<image>" + CAPTION.prompt()] * 4,
        return_tensors="pt",
        padding="longest",
    )
    inputs.pop("labels", None)
    inputs = inputs.to(loaded.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)
    out = loaded.model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    plain = [
        processor.decode(row, skip_special_tokens=True).strip()
        for row in out[:, inputs["input_ids"].shape[1] :]
    ]
    return ours == plain


def _follow_up(loaded: LoadedModel, pictures: list[bytes]) -> dict[str, float]:
    """Median ms of an ask after a describe on the same picture, features kept or not."""
    describe = TaskSpec.build("describe", max_new_tokens=NEW_TOKENS)
    ask = TaskSpec.build("answer", question="what is in the picture?", max_new_tokens=NEW_TOKENS)
    times: dict[str, list[float]] = {"kept": [], "computed": []}
    engines = {"kept": _engine(loaded, 1, cache=True), "computed": _engine(loaded, 1)}
    for picture in pictures[:6]:
        for name, engine in engines.items():
            engine.generate([InferenceRequest(describe, picture)])
            _sync()
            started = time.perf_counter()
            engine.generate([InferenceRequest(ask, picture)])
            _sync()
            times[name].append((time.perf_counter() - started) * 1000)
    for engine in engines.values():
        engine.close()
    return {name: round(statistics.median(ms[1:]), 2) for name, ms in times.items()}


def run_size(side: int, args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        build_checkpoint(Path(tmp), side, args.tiny)
        loaded = load_model(EngineSettings(_env_file=None, model_id=tmp))
    config = loaded.model.config
    rng = random.Random(3)
    most = max(8, 4 * max(args.batches))
    pictures = [encode_png(shapes.make_scene(rng, size=(640, 480)).image) for _ in range(most)]
    peak = _peak(args)
    rows = []
    for batch in args.batches:
        n = max(8, 4 * batch)
        engine = _engine(loaded, batch)
        engine.warmup()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        raw = _raw(engine, loaded, pictures[:n], batch)
        memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
        if redis_url is not None:
            worker = asyncio.run(
                _through_worker(engine, pictures[:n], batch, pipeline=True, redis_url=redis_url)
            )
        else:
            worker = _in_process_pipeline(engine, pictures[:n], batch)
        engine.close()
        prompt_len = config.vision_config.num_image_tokens + 4
        roof = roofline(loaded.model, config, batch, prompt_len, peak) if peak else None
        row = {
            "batch": batch,
            "raw_images_per_s": round(raw, 2),
            "worker_images_per_s": round(worker, 2),
            "worker_over_raw": round(worker / raw, 3),
            "peak_gib": round(memory, 2),
            "roofline_fraction": round(roof.seconds * raw / batch, 3) if roof else None,
        }
        rows.append(row)
        print(f"  {side}px batch {batch:>3}: {json.dumps(row)}", flush=True)
    check = _engine(loaded, 4)
    equal = _equal_to_eager(check, loaded, pictures)
    check.close()
    follow_up = _follow_up(loaded, pictures)
    print(
        f"  {side}px engine path equals eager generate: {equal}; "
        f"ask after describe (ms): {follow_up}"
    )
    return {"side": side, "rows": rows, "equal_to_eager": equal, "follow_up_ms": follow_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,448")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--tiny", action="store_true", help="toy shapes: a CPU smoke test")
    parser.add_argument("--peak-tflops", type=float, help="override the device's bf16 peak")
    parser.add_argument("--peak-tbps", type=float, help="override its memory bandwidth")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}; torch {torch.__version__}; peak {_peak(args)}", flush=True)
    with tempfile.TemporaryDirectory() as redis_dir:
        try:
            redis = choose_redis(os.environ.get("REDIS_URL"), Path(redis_dir))
            redis_url: str | None = redis.url
            print(f"worker through {redis.description}", flush=True)
        except SystemExit:
            redis, redis_url = None, None
            print("no redis-server here: the worker's prepare-ahead loop runs in process")
        try:
            sizes = [run_size(int(s), args, redis_url) for s in args.sizes.split(",")]
        finally:
            if redis is not None and redis.child is not None:
                redis.child.stop()
    record = {"device": device, "torch": torch.__version__, "sizes": sizes}
    out = Path(os.environ.get("OUT", "."))
    (out / "gpu_worker.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
