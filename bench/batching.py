"""Batched vs one-by-one generation on the demo model, measured side by side in one run.

    python -m bench.batching [--batch 8] [--images 32] [--rounds 3]

Prints images/s for both paths and their ratio (goal: batched ≥ 3× at batch 8).
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.paligemma import PaliGemmaEngine
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, TaskSpec

DEMO_MODEL = Path(__file__).resolve().parent.parent / "models" / "palicord-tiny"


def _requests(n: int) -> list[InferenceRequest]:
    rng = random.Random(11)
    spec = TaskSpec.build("caption")
    return [InferenceRequest(spec, encode_png(shapes.make_scene(rng).image)) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    args = parser.parse_args()

    settings = EngineSettings(_env_file=None, model_id=args.model, batch_size=args.batch)
    batched_engine = PaliGemmaEngine.from_settings(settings)
    batched_engine.warmup()
    requests = _requests(args.images)
    seq_rates, batch_rates = [], []
    for _ in range(args.rounds):
        # Interleave the two paths so machine noise hits both alike.
        started = time.perf_counter()
        one_by_one = [batched_engine.generate([r])[0] for r in requests]
        seq_rates.append(len(requests) / (time.perf_counter() - started))
        started = time.perf_counter()
        batched = batched_engine.generate(requests)
        batch_rates.append(len(requests) / (time.perf_counter() - started))
        assert batched == one_by_one, "batched outputs differ from one-by-one outputs"
    seq = statistics.median(seq_rates)
    bat = statistics.median(batch_rates)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, device {settings.device or 'auto'}"
    )
    print(f"{args.images} caption requests, batch {args.batch}, median of {args.rounds} rounds")
    print(f"{'path':<12}{'images/s':>10}")
    print(f"{'one-by-one':<12}{seq:>10.1f}")
    print(f"{'batched':<12}{bat:>10.1f}")
    print(f"ratio batched/one-by-one: {bat / seq:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
