"""GPU check through Palicord's own engine: real-size PaliGemma 2 3B-448, random weights.

Unlike `bench.gpu_throughput` (raw `generate` on token ids), this saves a checkpoint and
loads it through `inference.engine.loading.load_model` exactly as a hub checkpoint is
loaded (bf16 on CUDA), then times `PaliGemmaEngine.generate` on PNG bytes: image intake,
the processor, generation and decoding included. The tokenizer is the demo one (a real PaliGemma
tokenizer cannot be downloaded here); its ids all fall inside the 257,216-entry vocab.

    python -m bench.gpu_engine [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import PaliGemmaForConditionalGeneration

from bench.gpu_throughput import config_3b_448
from inference.demo import shapes
from inference.demo.build import build_processor, build_tokenizer
from inference.demo.shapes import encode_png
from inference.demo.train import corpus
from inference.engine.loading import load_model
from inference.engine.paligemma import PaliGemmaEngine
from inference.intake import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, TaskSpec


def build_checkpoint(out: Path, tiny: bool) -> None:
    tokenizer = build_tokenizer(corpus(50))
    config = config_3b_448(tiny)
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config.text_config.pad_token_id = tokenizer.pad_token_id
    vision = config.vision_config
    processor = build_processor(tokenizer, vision.image_size, vision.patch_size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_checkpoint(Path(tmp), args.tiny)
        print(f"checkpoint built and saved in {time.perf_counter() - started:.1f}s", flush=True)
        started = time.perf_counter()
        loaded = load_model(EngineSettings(_env_file=None, model_id=tmp))
        print(
            f"loaded through load_model in {time.perf_counter() - started:.1f}s: "
            f"{loaded.device}, {loaded.dtype}, {loaded.image_size}px",
            flush=True,
        )
    rng = random.Random(3)
    images = [encode_png(shapes.make_scene(rng, size=(640, 480)).image) for _ in range(args.images)]
    spec = TaskSpec.build("caption", max_new_tokens=20)
    requests = [InferenceRequest(spec, img) for img in images]
    rows = []
    for batch in (1, 8, 32):
        engine = PaliGemmaEngine(
            loaded,
            max_batch_size=batch,
            max_image_bytes=MAX_IMAGE_BYTES,
            max_image_pixels=MAX_IMAGE_PIXELS,
        )
        engine.generate(requests[:batch])  # warm-up
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        results = engine.generate(requests)
        elapsed = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated() / 2**30 if loaded.device.type == "cuda" else 0.0
        assert all(r.ok for r in results)
        row = {
            "batch": batch,
            "images_per_s": round(len(requests) / elapsed, 2),
            "peak_gib": round(peak, 2),
        }
        rows.append(row)
        print(
            f"engine batch {batch:>3}: {row['images_per_s']:>7.2f} images/s, peak {peak:.2f} GiB",
            flush=True,
        )
    out = Path(os.environ.get("OUT", "."))
    (out / "gpu_engine.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
