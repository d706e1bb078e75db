"""GPU check: real-size PaliGemma 2 3B-448 with random weights, captions of 20 tokens.

No download: the architecture is built from its config (sizes from transformers'
PaliGemma 2 conversion script). Prints images/s and peak GPU memory at
batch 1, 8 and 32 in bf16, and writes the same as JSON (to $OUT when set).

    python -m bench.gpu_throughput            # on a CUDA machine
    python -m bench.gpu_throughput --tiny     # smoke-test the script on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

IMAGE_TOKEN_ID = 257152
BOS_ID = 2
NEWLINE_ID = 108  # Gemma's "\n"


def config_3b_448(tiny: bool) -> PaliGemmaConfig:
    """PaliGemma 2 3B at 448 px (2B Gemma 2 text, SigLIP So400m/14), or a toy twin."""
    return config_3b(448, tiny)


def config_3b(side: int, tiny: bool) -> PaliGemmaConfig:
    """PaliGemma 2 3B at `side` px (224, 448 or 896), or a toy twin."""
    text: dict[str, Any] = {
        "model_type": "gemma2",
        "vocab_size": 257216,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "max_position_embeddings": 8192,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
    }
    vision: dict[str, Any] = {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": side,
        "num_image_tokens": (side // 14) ** 2,
        "projection_dim": 2304,
    }
    if tiny:
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16)
        text.update(num_attention_heads=4, num_key_value_heads=2, query_pre_attn_scalar=16)
        vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
        toy_side = side // 8
        vision.update(num_attention_heads=2, image_size=toy_side, projection_dim=64)
        vision.update(num_image_tokens=(toy_side // 14) ** 2)
    return PaliGemmaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=IMAGE_TOKEN_ID,
        vocab_size=text["vocab_size"],
        projection_dim=text["hidden_size"],
        hidden_size=text["hidden_size"],
    )


def caption_batch(config: PaliGemmaConfig, batch: int, device: torch.device) -> dict[str, Any]:
    """`<image>×N <bos> caption en \\n` for `batch` random images."""
    n_img = config.vision_config.num_image_tokens
    prompt = [IMAGE_TOKEN_ID] * n_img + [BOS_ID, 9000, 9001, NEWLINE_ID]  # "caption en"
    ids = torch.tensor([prompt] * batch, device=device)
    side = config.vision_config.image_size
    pixels = torch.randn(batch, 3, side, side, device=device, dtype=torch.bfloat16)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "pixel_values": pixels,
    }


def measure(
    model: Any, config: PaliGemmaConfig, batch: int, device: torch.device
) -> dict[str, Any]:
    inputs = caption_batch(config, batch, device)
    gen = {"max_new_tokens": 20, "min_new_tokens": 20, "do_sample": False, "pad_token_id": 0}
    model.generate(**inputs, **gen)  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    repeats = 3
    started = time.perf_counter()
    for _ in range(repeats):
        out = model.generate(**inputs, **gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - started) / repeats
    new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {
        "batch": batch,
        "seconds_per_batch": round(elapsed, 4),
        "images_per_s": round(batch / elapsed, 2),
        "new_tokens": int(new_tokens),
        "peak_gib": round(peak, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batches", default="1,8,32")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = config_3b_448(args.tiny)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(config).to(torch.bfloat16).eval()
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {gpu}; torch {torch.__version__}; params {params / 1e9:.3f} B;")
    print(
        f"built in {build_s:.1f}s; weights {weights_gib:.2f} GiB; "
        f"attention {config.text_config._attn_implementation}"
    )
    rows = []
    with torch.inference_mode():
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(model, config, batch, device)
            rows.append(row)
            print(
                f"batch {row['batch']:>3}: {row['images_per_s']:>8.2f} images/s "
                f"({row['seconds_per_batch']:.3f} s per batch of 20 new tokens), "
                f"peak {row['peak_gib']:.2f} GiB",
                flush=True,
            )
    record = {"device": gpu, "torch": torch.__version__, "params": params, "rows": rows}
    out_dir = Path(os.environ.get("OUT", "."))
    (out_dir / "gpu_throughput.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
