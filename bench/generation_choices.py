"""Generation choices for PaliGemma 2, each measured against eager attention with a
dynamic cache on the same inputs in one run, and kept only if faster with equal outputs.

    python -m bench.generation_choices [--batch 8] [--repeats 5] [--compile] [--model DIR]

Choices: the attention implementation (`eager`, `sdpa`, `flex_attention`), a static KV
cache (`cache_implementation="static"`), `torch.compile` of the language model (with
`--compile`: the first call compiles, minutes on a CPU), and how a batch of mixed token
budgets ends: every row to the longest budget (one `max_new_tokens`) against each row
stopped at its own (`inputs.RowBudgets`, what the engine does). A choice transformers
refuses for PaliGemma 2 is reported with its error. Greedy captions on shape pictures.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, PaliGemmaForConditionalGeneration, StoppingCriteriaList

from inference.demo import shapes
from inference.engine.inputs import RowBudgets
from inference.engine.loading import pick_device

DEMO_MODEL = Path(__file__).resolve().parent.parent / "models" / "palicord-tiny"


def _timed(call: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    out = call()  # warm-up: kernels, allocator, compilation
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        out = call()
    sync()
    return (time.perf_counter() - started) / repeats, out


def _load(model: str, device: torch.device, attn: str) -> Any:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    loaded = PaliGemmaForConditionalGeneration.from_pretrained(
        model, dtype=dtype, attn_implementation=attn
    )
    return loaded.to(device).eval()


def _inputs(model: str, batch: int, prompts: list[str], device: torch.device) -> dict[str, Any]:
    processor = AutoProcessor.from_pretrained(model)
    processor.tokenizer.padding_side = "left"
    rng = random.Random(3)
    images = [shapes.make_scene(rng, size=(224, 224)).image for _ in range(batch)]
    texts = ["<image>" + prompts[n % len(prompts)] for n in range(batch)]
    inputs = processor(images=images, text=texts, return_tensors="pt", padding="longest")
    inputs.pop("labels", None)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return dict(inputs.to(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=20, help="new tokens per caption")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile")
    parser.add_argument("--model", default=str(DEMO_MODEL))
    args = parser.parse_args()
    device = pick_device(None)
    print(
        f"machine: {platform.machine()}, device {device}, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}; batch {args.batch}, model {args.model}"
    )
    inputs = _inputs(args.model, args.batch, ["caption en"], device)
    gen = {"max_new_tokens": args.tokens, "do_sample": False, "pad_token_id": 0}
    eager = _load(args.model, device, "eager")
    with torch.inference_mode():
        base_s, base_out = _timed(lambda: eager.generate(**inputs, **gen), args.repeats)
        print(f"  eager, dynamic cache (reference): {base_s * 1000:8.1f} ms per batch")
        for attn in ("sdpa", "flex_attention"):
            try:
                model = _load(args.model, device, attn)
            except Exception as exc:  # a choice transformers refuses is a result
                print(f"  {attn}: refused: {type(exc).__name__}: {_first_line(exc)}")
                continue
            _report(attn, partial(model.generate, **inputs, **gen), base_s, base_out, args)
        static = {**gen, "cache_implementation": "static"}
        _report("static cache", lambda: eager.generate(**inputs, **static), base_s, base_out, args)
        if args.compile:
            compiled = _load(args.model, device, "eager")
            forward = compiled.model.language_model.forward
            compiled.model.language_model.forward = torch.compile(forward, dynamic=True)
            _report(
                "torch.compile", lambda: compiled.generate(**inputs, **gen), base_s, base_out, args
            )
        _budgets(args, device, eager)


def _report(
    name: str, call: Callable[[], torch.Tensor], base_s: float, base_out: torch.Tensor, args: Any
) -> None:
    try:
        seconds, out = _timed(call, args.repeats)
    except Exception as exc:  # a choice transformers refuses is a result, not a crash
        print(f"  {name}: refused: {type(exc).__name__}: {_first_line(exc)}")
        return
    same = torch.equal(out, base_out)
    print(
        f"  {name}: {seconds * 1000:8.1f} ms ({seconds / base_s:.2f} of eager), "
        f"same outputs: {same}"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:150]


def _budgets(args: Any, device: torch.device, model: Any) -> None:
    """Half the rows a description cut at 8 tokens, half a one-word answer (budget 48)."""
    prompts = ["describe en", "answer en what color is the circle?"]
    inputs = _inputs(args.model, args.batch, prompts, device)
    budgets = [8 if n % 2 == 0 else 48 for n in range(args.batch)]
    prompt_len = inputs["input_ids"].shape[1]
    gen = {"max_new_tokens": max(budgets), "do_sample": False, "pad_token_id": 0}
    rows = StoppingCriteriaList([RowBudgets(prompt_len, budgets, device)])
    longest_s, longest = _timed(lambda: model.generate(**inputs, **gen), args.repeats)
    own_s, own = _timed(
        lambda: model.generate(**inputs, **gen, stopping_criteria=rows), args.repeats
    )
    processor = AutoProcessor.from_pretrained(args.model)

    def texts(out: torch.Tensor) -> list[str]:
        rows = out[:, prompt_len:]
        return [
            processor.decode(r[:b], skip_special_tokens=True)
            for r, b in zip(rows, budgets, strict=True)
        ]

    same = texts(longest) == texts(own)
    print(
        f"  mixed budgets (8 and 48): to the longest {longest_s * 1000:.1f} ms, "
        f"{longest.shape[1] - prompt_len} steps; each row to its own {own_s * 1000:.1f} ms, "
        f"{own.shape[1] - prompt_len} steps ({own_s / longest_s:.2f}); same answers: {same}"
    )


if __name__ == "__main__":
    main()
