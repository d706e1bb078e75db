"""GPU check for the generation loops (issue 25): transformers' `generate` against
Palicord's fixed-shape loop (`inference.engine.static_loop`), then quantised checkpoints.

    python -m bench.gpu_generation --part speed    # <= 6 min on an H100
    python -m bench.gpu_generation --part memory   # <= 6 min on an H100
    python -m bench.gpu_generation --tiny          # both parts, toy shapes, CPU, < 1 min

Part 1, speed: real-size PaliGemma 2 3B at 224 and 448 px (random weights, bf16, SigLIP
on sdpa and Gemma 2 on eager), batch 1/8/32/64, 20-token captions (no end-of-sequence
token, so every row runs its 20 tokens). For each batch, side by side: images/s of each
loop (vision tower included, the engine's path: features handed over as
`mm_encoder_outputs`), their ratio, peak memory, the fraction of the roofline reached
(`bench.gpu_worker.roofline`), vision / prefill / decode milliseconds (CUDA events), and
the share of rows whose 20 tokens are identical between the loops.
Part 2, memory: int8 and nf4 (bitsandbytes) for 3B and 10B at 448 px: weights' memory,
peak and images/s at batch 8 with each loop; then 28B in nf4: weights' memory plus the KV
cache and peak at batch 1 and 8 for 448 px, against a 16 GB card. Quantised models are
built on the meta device and each linear layer is materialised in bf16 and quantised on
the GPU one at a time, so 28B never needs its 55 GB of bf16 weights at once.
Writes gpu_generation.json to $OUT (or the current directory).

What the device machine needs (it has torch 2.11+cu130 and transformers 5.17, no
package index): carry in the working tree, then `pip install --no-deps` them first:
- transformers 5.24 (py3-none-any, ~10 MB): the engine needs >= 5.24
  (`mm_encoder_outputs`); on 5.17 this script still runs (the transformers loop then
  gets pixel values, the static loop passes its cache as `past_key_values`), and says so.
  5.24 itself wants tokenizers >= 0.23.1 and huggingface-hub >= 1.31 at import: where the
  image's are older, carry those wheels too (or run on 5.17).
- bitsandbytes 0.50.2 (manylinux x86_64, 43 MB, ships libbitsandbytes_cuda130.so;
  `pip download bitsandbytes==0.50.2 --no-deps --python-version 3.12 --only-binary=:all:`)
  for part 2; without it part 2 reports "bitsandbytes missing" and goes on.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import inspect
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, StoppingCriteriaList
from transformers.modeling_outputs import BaseModelOutputWithPooling

from bench.gpu_throughput import BOS_ID, IMAGE_TOKEN_ID, NEWLINE_ID, config_3b
from bench.gpu_worker import _peak, roofline
from inference.engine.inputs import RowBudgets
from inference.engine.static_loop import StaticLoop, default_batch_buckets

NEW_TOKENS = 20
PAD = 0
GiB = 2**30
CARD_16GB = 16e9  # a "16 GB" card's bytes, before the CUDA context takes its share

# Gemma 2 9B and 27B text models (transformers' PaliGemma 2 conversion script).
TEXT_SIZES: dict[str, dict[str, Any]] = {
    "3b": {},
    "10b": {
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_hidden_layers": 42,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
    },
    "28b": {
        "hidden_size": 4608,
        "intermediate_size": 36864,
        "num_hidden_layers": 46,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 128,
        "query_pre_attn_scalar": 144,
    },
}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TINY_VOCAB = 9216  # above the prompt's ids (9000, 9001); the image id stays out of it


def config_for(size: str, side: int, tiny: bool) -> PaliGemmaConfig:
    """PaliGemma 2 at `size` (3b/10b/28b) and `side` px, or a toy twin of it."""
    config = config_3b(side, tiny)
    text = TINY_TEXT if tiny and size != "3b" else ({} if tiny else TEXT_SIZES[size])
    for name, value in text.items():
        setattr(config.text_config, name, value)
    if tiny:
        config.text_config.vocab_size = config.vocab_size = TINY_VOCAB
    hidden = config.text_config.hidden_size
    config.hidden_size = config.projection_dim = hidden
    config.vision_config.projection_dim = hidden
    config.text_config.layer_types = [
        "sliding_attention" if (i + 1) % 2 else "full_attention"
        for i in range(config.text_config.num_hidden_layers)
    ]
    return config


PER_TOWER = {"vision_config": "sdpa", "text_config": "eager"}


def _dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _from_config(config: PaliGemmaConfig) -> Any:
    """SigLIP on sdpa and Gemma 2 on eager where this transformers takes a dict per
    sub-config (5.24 does), else eager for both."""
    try:
        return PaliGemmaForConditionalGeneration._from_config(
            config, attn_implementation=PER_TOWER, dtype=torch.get_default_dtype()
        )
    except (ValueError, TypeError, KeyError) as exc:
        print(f"  attention per tower refused ({exc!r}); eager for both towers")
        return PaliGemmaForConditionalGeneration._from_config(
            config, attn_implementation="eager", dtype=torch.get_default_dtype()
        )


def _attention_of(model: Any) -> str:
    vision, text = model.config.vision_config, model.config.text_config
    return f"vision {vision._attn_implementation}, text {text._attn_implementation}"


def _has_mm_encoder_outputs(model: Any) -> bool:
    return "mm_encoder_outputs" in inspect.signature(model.forward).parameters


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """Marks on the device's timeline (CUDA events), or the host's on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def ms(self, a: int, b: int) -> float:
        if self._cuda:
            return float(self.marks[a].elapsed_time(self.marks[b]))
        return float(self.marks[b] - self.marks[a]) * 1000


def build_dense(config: PaliGemmaConfig, device: torch.device) -> Any:
    """Random weights on `device` (bf16 on CUDA, float32 on the CPU, as the engine loads
    them), SigLIP on sdpa and Gemma 2 on eager."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(_dtype(device))
    try:
        with torch.device(device):
            model = _from_config(config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config.eos_token_id = None  # every row runs its 20 tokens
    return model.eval()


def caption_inputs(config: PaliGemmaConfig, batch: int, device: torch.device) -> dict[str, Any]:
    """`<image>×N <bos> caption en \\n`, different pixels per row."""
    n_img = config.vision_config.num_image_tokens
    prompt = [IMAGE_TOKEN_ID] * n_img + [BOS_ID, 9000, 9001, NEWLINE_ID]
    ids = torch.tensor([prompt] * batch, device=device)
    side = config.vision_config.image_size
    gen = torch.Generator(device=device).manual_seed(batch)
    pixels = torch.randn(batch, 3, side, side, device=device, generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixels": pixels}


def _features(model: Any, pixels: torch.Tensor) -> torch.Tensor:
    dtype = model.model.vision_tower.embeddings.patch_embedding.weight.dtype
    out = model.model.get_image_features(pixel_values=pixels.to(dtype))
    features: torch.Tensor = out.pooler_output if hasattr(out, "pooler_output") else out
    return features


def run_transformers(model: Any, inputs: dict[str, Any], clock: _Clock) -> torch.Tensor:
    """The engine's transformers path; marks: start, features, first decode call, end."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    budgets = [NEW_TOKENS] * ids.shape[0]
    lm = model.model.language_model
    calls = [0]

    def mark_second_call(*_: Any, **__: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            clock.mark()

    hook = lm.register_forward_pre_hook(mark_second_call)
    try:
        clock.mark()
        features = _features(model, inputs["pixels"])
        clock.mark()
        extra: dict[str, Any] = {}
        if _has_mm_encoder_outputs(model):
            extra["mm_encoder_outputs"] = {
                "image": BaseModelOutputWithPooling(pooler_output=features)
            }
        else:  # transformers < 5.24: the tower runs again inside generate
            extra["pixel_values"] = inputs["pixels"].to(model.dtype)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=torch.zeros_like(ids),
            max_new_tokens=NEW_TOKENS,
            stopping_criteria=StoppingCriteriaList([RowBudgets(ids.shape[1], budgets, ids.device)]),
            do_sample=False,
            num_beams=1,
            pad_token_id=PAD,
            **extra,
        )
        clock.mark()
    finally:
        hook.remove()
    return out[:, ids.shape[1] :]  # type: ignore[no-any-return]


def run_static(loop: StaticLoop, model: Any, inputs: dict[str, Any], clock: _Clock) -> torch.Tensor:
    """The static loop; marks: start, features, end of prefill, end."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    prefill = loop._prefill

    def marked(*args: Any) -> torch.Tensor:
        first = prefill(*args)
        clock.mark()
        return first

    loop._prefill = marked  # type: ignore[method-assign,assignment]
    try:
        clock.mark()
        features = _features(model, inputs["pixels"])
        clock.mark()
        out = loop.generate(ids, mask, features, [NEW_TOKENS] * ids.shape[0])
        clock.mark()
    finally:
        del loop._prefill
    return out


def time_loop(
    run: Callable[[_Clock], torch.Tensor], device: torch.device, repeats: int
) -> dict[str, Any]:
    """images/s over `repeats` runs after one warm-up, and the last run's phases."""
    run(_Clock(device))  # warm-up: kernels, allocator, graph capture
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clocks = [_Clock(device) for _ in range(repeats)]
    started = time.perf_counter()
    for clock in clocks:
        tokens = run(clock)
    _sync(device)
    seconds = (time.perf_counter() - started) / repeats
    last = clocks[-1]
    return {
        "seconds": seconds,
        "tokens": tokens,
        "vision_ms": round(last.ms(0, 1), 2),
        "prefill_ms": round(last.ms(1, 2), 2),
        "decode_ms": round(last.ms(2, 3), 2),
        "peak_gib": round(torch.cuda.max_memory_allocated(device) / GiB, 2)
        if device.type == "cuda"
        else None,
    }


@torch.inference_mode()
def speed(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for side in args.sizes:
        rows += _speed_of_size(side, args, device)
        _free(device)
    return rows


def _speed_of_size(
    side: int, args: argparse.Namespace, device: torch.device
) -> list[dict[str, Any]]:
    rows = []
    peak = _peak(args)
    config = config_for("3b", side, args.tiny)
    model = build_dense(config, device)
    weights = _allocated(device) / GiB
    print(f"3B-{side}: weights {weights:.2f} GiB; {_attention_of(model)}", flush=True)
    loop = StaticLoop(
        model,
        pad_token_id=PAD,
        eos_token_ids=[],
        batch_buckets=default_batch_buckets(max(args.batches)),
        slot_step=64,
        cuda_graphs=device.type == "cuda",
    )
    for batch in args.batches:
        inputs = caption_inputs(config, batch, device)
        repeats = args.repeats if batch < 32 else max(1, args.repeats - 1)
        theirs = time_loop(functools.partial(run_transformers, model, inputs), device, repeats)
        ours = time_loop(functools.partial(run_static, loop, model, inputs), device, repeats)
        same = (theirs["tokens"] == ours["tokens"]).all(-1).float().mean().item()
        prompt_len = inputs["input_ids"].shape[1]
        roof = roofline(model, config, batch, prompt_len, peak) if peak else None
        row: dict[str, Any] = {"size": f"3B-{side}", "batch": batch}
        for name, m in (("transformers", theirs), ("static", ours)):
            row[name] = {
                "images_per_s": round(batch / m["seconds"], 2),
                "roofline_fraction": round(roof.seconds / m["seconds"], 3) if roof else None,
                "peak_gib": m["peak_gib"],
                "vision_ms": m["vision_ms"],
                "prefill_ms": m["prefill_ms"],
                "decode_ms": m["decode_ms"],
            }
        row["static_over_transformers"] = round(theirs["seconds"] / ours["seconds"], 2)
        row["identical_rows"] = round(same, 3)
        rows.append(row)
        print(_speed_line(row), flush=True)
    return rows


def _speed_line(row: dict[str, Any]) -> str:
    t, s = row["transformers"], row["static"]
    return (
        f"  {row['size']} batch {row['batch']:>3}: images/s {t['images_per_s']:>8.2f} -> "
        f"{s['images_per_s']:>8.2f} (x{row['static_over_transformers']}); "
        f"roofline {t['roofline_fraction']} -> {s['roofline_fraction']}; "
        f"peak GiB {t['peak_gib']} / {s['peak_gib']}; "
        f"ms vision {t['vision_ms']}/{s['vision_ms']} prefill {t['prefill_ms']}/"
        f"{s['prefill_ms']} decode {t['decode_ms']}/{s['decode_ms']}; "
        f"identical rows {row['identical_rows']}"
    )


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- part 2: quantised checkpoints -----------------------------------------------------------


def build_quantised(config: PaliGemmaConfig, mode: str, device: torch.device) -> Any:
    """`mode` "int8" or "nf4" (bitsandbytes) or "bf16" (the CPU rehearsal): built on the
    meta device, then each linear layer is given random bf16 weights on `device` and
    quantised there, one at a time; the tied embedding (and lm_head with it) stays bf16,
    as transformers does."""
    # bitsandbytes' modules, untyped for mypy's purposes.
    bnb: Any = importlib.import_module("bitsandbytes.nn") if mode != "bf16" else None
    config.tie_word_embeddings = True
    config.text_config.tie_word_embeddings = True
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = _from_config(config)
    finally:
        torch.set_default_dtype(previous)
    gen = torch.Generator(device=device).manual_seed(0)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear) or child is model.lm_head:
                continue
            weight = torch.empty(child.weight.shape, dtype=torch.bfloat16, device=device)
            weight.normal_(0, 0.02, generator=gen)
            layer = _replacement(child, mode, weight, device, bnb)
            del weight
            setattr(parent, name, layer)
    # Everything not quantised (embedding, norms, position embeddings, buffers); lm_head
    # is the embedding itself (tied below), never a copy.
    for module in model.modules():
        if module is model.lm_head:
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.device.type == "meta":
                data = torch.empty(param.shape, dtype=torch.bfloat16, device=device)
                data.normal_(0, 0.02, generator=gen)
                module._parameters[name] = torch.nn.Parameter(data, requires_grad=False)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.device.type == "meta":
                module._buffers[name] = _rebuild_buffer(module, name, buf, device)
    model.lm_head.weight = model.get_input_embeddings().weight
    model.generation_config.eos_token_id = None
    return model.eval()


def _replacement(
    child: torch.nn.Linear, mode: str, weight: torch.Tensor, device: torch.device, bnb: Any
) -> Any:
    """`child` as a bitsandbytes layer (or a plain one for "bf16") holding `weight`."""
    bias = child.bias is not None
    layer: Any
    if mode == "bf16":
        layer = torch.nn.Linear(child.in_features, child.out_features, bias=bias, device="meta")
        layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    elif mode == "nf4":
        layer = bnb.Linear4bit(
            child.in_features,
            child.out_features,
            bias=bias,
            compute_dtype=torch.bfloat16,
            quant_type="nf4",
            compress_statistics=True,
            device="meta",
        )
        layer.weight = bnb.Params4bit(
            weight, requires_grad=False, quant_type="nf4", compress_statistics=True
        ).to(device)
    else:
        layer = bnb.Linear8bitLt(
            child.in_features,
            child.out_features,
            bias=bias,
            has_fp16_weights=False,
            threshold=6.0,
            device="meta",
        )
        # Int8Params quantises only on a move from the CPU; these weights are
        # made on the GPU, so quantise them in place (bitsandbytes 0.45-0.50).
        int8 = bnb.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        layer.weight = int8._quantize(device)
    if mode != "bf16" and layer.weight.dtype not in (torch.int8, torch.uint8):
        raise RuntimeError(f"bitsandbytes left the weight in {layer.weight.dtype}")
    if bias:
        layer.bias = torch.nn.Parameter(
            torch.zeros(child.out_features, dtype=torch.bfloat16, device=device),
            requires_grad=False,
        )
    return layer


def _rebuild_buffer(module: Any, name: str, buf: torch.Tensor, device: torch.device) -> Any:
    """Buffers computed at construction (rotary frequencies, position ids, scales)."""
    if name == "inv_freq":
        inv_freq, _ = module.compute_default_rope_parameters(module.config)
        return inv_freq.to(device)
    if name == "original_inv_freq":
        return module.inv_freq.clone()
    if name == "embed_scale":
        return torch.tensor(module.scalar_embed_scale, device=device)
    if name == "position_ids":
        return torch.arange(buf.shape[-1], device=device).expand(buf.shape)
    return torch.zeros(buf.shape, dtype=buf.dtype, device=device)


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def kv_cache_gib(config: PaliGemmaConfig, batch: int, tokens: int) -> float:
    text = config.text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2
    return float(batch * tokens * per_token / GiB)


@torch.inference_mode()
def memory(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cuda = device.type == "cuda"
    if cuda:
        try:
            import bitsandbytes

            print(f"  bitsandbytes {bitsandbytes.__version__}", flush=True)
        except Exception as exc:  # ImportError, or its CUDA library failing to load
            print(f"  bitsandbytes missing or broken: {exc!r}")
            return [{"skipped": f"bitsandbytes: {exc!r}"}]
    else:
        print("  no CUDA: bitsandbytes cannot run; rehearsing the table's path in bf16")
    plan = [(s, m) for s in ("3b", "10b") for m in ("int8", "nf4")] + [("28b", "nf4")]
    for size, wanted in plan:
        mode = wanted if cuda else "bf16"
        config = config_for(size, 448, args.tiny)
        row: dict[str, Any] = {"size": size.upper() + "-448", "mode": mode}
        try:
            before = _allocated(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            model = build_quantised(config, mode, device)
            row["build_s"] = round(time.perf_counter() - started, 1)
            row["weights_gib"] = round((_allocated(device) - before) / GiB, 2)
            if cuda:
                row["build_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / GiB, 2)
            batches = (1, 8) if size == "28b" else (8,)
            for batch in batches:
                row.update(_quantised_batch(model, config, batch, device, size == "28b"))
            del model
        except Exception as exc:  # one configuration failing must not end the table
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        _free(device)
        rows.append(row)
        print(f"  {json.dumps(row)}", flush=True)
    return rows


def _quantised_batch(
    model: Any, config: PaliGemmaConfig, batch: int, device: torch.device, fit: bool
) -> dict[str, Any]:
    inputs = caption_inputs(config, batch, device)
    out: dict[str, Any] = {}
    prompt_len = inputs["input_ids"].shape[1]
    out[f"kv_gib_b{batch}"] = round(kv_cache_gib(config, batch, prompt_len + NEW_TOKENS), 3)
    m = time_loop(functools.partial(run_transformers, model, inputs), device, 1)
    out[f"transformers_images_per_s_b{batch}"] = round(batch / m["seconds"], 2)
    out[f"transformers_peak_gib_b{batch}"] = m["peak_gib"]
    try:
        loop = StaticLoop(model, pad_token_id=PAD, eos_token_ids=[], slot_step=64)
        s = time_loop(functools.partial(run_static, loop, model, inputs), device, 1)
        out[f"static_images_per_s_b{batch}"] = round(batch / s["seconds"], 2)
        out[f"static_peak_gib_b{batch}"] = s["peak_gib"]
        del loop
    except Exception as exc:  # bitsandbytes kernels inside a CUDA graph: say what broke
        out[f"static_error_b{batch}"] = f"{type(exc).__name__}: {exc}"[:200]
    peaks = [v for k, v in out.items() if "peak_gib" in k and v is not None]
    if fit and peaks:
        out[f"fits_16gb_b{batch}"] = max(peaks) * GiB < CARD_16GB
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "memory", "all"], default="all")
    parser.add_argument("--sizes", default="224,448")
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="toy shapes: a CPU rehearsal")
    parser.add_argument("--peak-tflops", type=float, help="override the device's bf16 peak")
    parser.add_argument("--peak-tbps", type=float, help="override its memory bandwidth")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"device {name}; torch {torch.__version__}; transformers {transformers.__version__}; "
        f"peak {_peak(args)}",
        flush=True,
    )
    record: dict[str, Any] = {
        "device": name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tiny": args.tiny,
    }
    started = time.perf_counter()
    if args.part in ("speed", "all"):
        record["speed"] = speed(args, device)
        print(f"speed part: {time.perf_counter() - started:.0f} s", flush=True)
    if args.part in ("memory", "all"):
        started = time.perf_counter()
        record["memory"] = memory(args, device)
        print(f"memory part: {time.perf_counter() - started:.0f} s", flush=True)
    out = Path(os.environ.get("OUT", "."))
    (out / "gpu_generation.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
