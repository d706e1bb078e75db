"""The two generation loops (`GENERATION_LOOP`) side by side through the engine, on the
demo checkpoint (or --model), on whatever device is here: images/s of `transformers` and
`static` for mixed tasks at a few batch sizes, and whether their answers are equal.

    python -m bench.generation_loops [--batches 1,8,32] [--repeats 3] [--model DIR]

Pictures are prepared once beforehand and no image features are kept, so the figures are
the engine's generate alone (vision tower, loop, decoding). The GPU's own comparison,
real-size, is bench/gpu_generation.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

import torch

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.paligemma import PaliGemmaEngine
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, TaskSpec
from tests.support.demo import DEMO_MODEL

SPECS = [
    TaskSpec.build("caption"),
    TaskSpec.build("detect", objects="circle ; square"),
    TaskSpec.build("answer", question="what color is the circle?"),
    TaskSpec.build("describe"),
    TaskSpec.build("ocr"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    args = parser.parse_args()
    engines = {
        loop: PaliGemmaEngine.from_settings(
            EngineSettings(
                _env_file=None,
                model_id=args.model,
                generation_loop=loop,
                prepare_processes=0,
                feature_cache_max_bytes=0,
            ).model_copy(update={"batch_size": max(int(b) for b in args.batches.split(","))})
        )
        for loop in ("transformers", "static")
    }
    for engine in engines.values():
        engine.warmup()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"{device}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}; {args.model}"
    )
    rng = random.Random(7)
    for batch in (int(b) for b in args.batches.split(",")):
        pictures = [encode_png(shapes.make_scene(rng, size=(240, 180)).image) for _ in range(batch)]
        requests = [InferenceRequest(SPECS[i % len(SPECS)], p) for i, p in enumerate(pictures)]
        ready = engines["transformers"].prepare(requests)
        answers, rates = {}, {}
        for loop, engine in engines.items():
            answers[loop] = engine.generate(ready)  # warm-up (the static loop's buffers)
            started = time.perf_counter()
            for _ in range(args.repeats):
                engine.generate(ready)
            rates[loop] = args.repeats * batch / (time.perf_counter() - started)
        same = answers["transformers"] == answers["static"]
        print(
            f"batch {batch:>3}: transformers {rates['transformers']:7.2f} images/s, "
            f"static {rates['static']:7.2f} images/s "
            f"(x{rates['static'] / rates['transformers']:.2f}); answers equal: {same}",
            flush=True,
        )
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
