"""The image-feature cache on an ask-after-describe pair: the follow-up question's time
with the picture's features kept against computed again, side by side in one run.

    python -m bench.feature_cache [--pairs 16] [--rounds 3] [--model DIR]

Two engines on the same checkpoint, one with the cache (the default budget) and one with
it off. For each of `--pairs` new pictures, each engine runs `/describe` and then an
`/ask` on the same picture; only the ask is timed (it is the follow-up the cache is for).
Rounds alternate the engines so machine noise hits both alike. Prints the median ask
time, the ratio, the vision tower's own time per picture, and checks that both engines
gave the same answers. On the demo model (CPU) the vision tower is a small part of a
request; on a real checkpoint it is ~0.4 B parameters over 256-1,024 image tokens.
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
from inference.tasks import InferenceRequest, InferenceResult, TaskSpec

DEMO_MODEL = Path(__file__).resolve().parent.parent / "models" / "palicord-tiny"
DESCRIBE = TaskSpec.build("describe")
ASK = TaskSpec.build("answer", question="what color is the circle?")


def _engine(model: str, cache: bool) -> PaliGemmaEngine:
    settings = EngineSettings(_env_file=None, model_id=model)
    if not cache:
        settings = settings.model_copy(update={"feature_cache_max_bytes": 0})
    engine = PaliGemmaEngine.from_settings(settings)
    engine.warmup()
    return engine


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _pair(engine: PaliGemmaEngine, picture: bytes) -> tuple[float, list[InferenceResult]]:
    """The ask's seconds (after a describe of the same picture), and both answers."""
    first = engine.generate([InferenceRequest(DESCRIBE, picture)])
    _sync()
    started = time.perf_counter()
    then = engine.generate([InferenceRequest(ASK, picture)])
    _sync()
    return time.perf_counter() - started, first + then


def _tower_s(engine: PaliGemmaEngine, repeats: int = 10) -> float:
    side = engine.image_size
    pixels = torch.zeros(1, 3, side, side, dtype=engine._loaded.dtype, device=engine._loaded.device)
    engine._vision_tower(pixels)
    _sync()
    started = time.perf_counter()
    for _ in range(repeats):
        engine._vision_tower(pixels)
    _sync()
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(DEMO_MODEL))
    args = parser.parse_args()
    engines = {
        "kept": _engine(args.model, cache=True),
        "computed": _engine(args.model, cache=False),
    }
    rng = random.Random(7)
    times: dict[str, list[float]] = {name: [] for name in engines}
    answers: dict[str, list[InferenceResult]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        pictures = [
            encode_png(shapes.make_scene(rng, size=(320, 240)).image) for _ in range(args.pairs)
        ]
        for name, engine in engines.items():
            for picture in pictures:
                seconds, results = _pair(engine, picture)
                times[name].append(seconds)
                answers[name].extend(results)
    kept, computed = (statistics.median(times[n]) * 1000 for n in ("kept", "computed"))
    cache = engines["kept"].features.cache
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, device {engines['kept']._loaded.device}; model {args.model}"
    )
    print(f"  {args.rounds} rounds of {args.pairs} describe-then-ask pairs; the ask timed")
    print(f"  ask, features kept:     {kept:8.2f} ms (median)")
    print(f"  ask, features computed: {computed:8.2f} ms  -> kept/computed {kept / computed:.2f}")
    print(f"  vision tower alone:     {_tower_s(engines['kept']) * 1000:8.2f} ms per picture")
    print(
        f"  cache: {cache.hits} hits, {cache.misses} misses, "
        f"{cache.bytes_used / 2**20:.1f} MiB kept"
    )
    print(f"  same answers with and without the cache: {answers['kept'] == answers['computed']}")


if __name__ == "__main__":
    main()
