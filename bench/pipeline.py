"""Worker throughput through the real queue against `generate` alone on ready inputs, with
the pipelined worker and without, side by side in one run (demo model, CPU).

    python -m bench.pipeline [--images 64] [--batch 8] [--rounds 3] [--size 224] [--threads N]

"Raw" runs `engine.generate` on requests already prepared (decoded, resized, tokenised),
batch after batch: the device's work and nothing else. "Worker" submits the same pictures
to a fresh queue on the local Redis and times `Worker.run(burst=True)` from start to the
last result: pipelined with the preparing processes (the default), pipelined with
preparation in a thread (PREPARE_PROCESSES=0), and one batch at a time (PIPELINE=false).
Prints images/s and the ratios (goal: pipelined worker >= 0.9 of raw). Rounds interleave
the four so machine noise hits them alike.

`--threads N` runs every measurement with N torch threads (TORCH_THREADS; the engine's
default on the CPU is one fewer than the cores). With fewer threads than cores the
worker's CPU side (Redis, decoding, tokenising) has a core of its own, as it has next to
a GPU; with every core given to torch's OpenMP team, each bit of other work stalls the
whole team, and the ratio measures the machine's spare CPU, not the overlap.

Each measurement runs in a fresh process: torch on the CPU gives every thread that calls
it an OpenMP team of its own, and a second team left from an earlier measurement in the
same process halves the next one's speed (the worker runs its engine on one thread for
the same reason).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import torch
from redis.asyncio import Redis

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.paligemma import PaliGemmaEngine, cpu_threads
from inference.queue import QueueClient
from inference.settings import EngineSettings, WorkerSettings
from inference.tasks import InferenceRequest, TaskSpec
from inference.worker import Worker
from tests.support.discord_server.harness import REDIS_URL, delete_prefix

DEMO_MODEL = Path(__file__).resolve().parent.parent / "models" / "palicord-tiny"
MODES = ("raw", "pipelined", "pipelined-thread", "serial")


def _pictures(n: int, size: int) -> list[bytes]:
    rng = random.Random(13)
    return [encode_png(shapes.make_scene(rng, size=(size, size)).image) for _ in range(n)]


def _raw(engine: PaliGemmaEngine, pictures: list[bytes], batch: int) -> float:
    spec = TaskSpec.build("caption")
    ready = engine.prepare([InferenceRequest(spec, p) for p in pictures])
    started = time.perf_counter()
    for start in range(0, len(ready), batch):
        engine.generate(ready[start : start + batch])
    return len(pictures) / (time.perf_counter() - started)


async def _through_worker(
    engine: PaliGemmaEngine,
    pictures: list[bytes],
    batch: int,
    *,
    pipeline: bool,
    redis_url: str = REDIS_URL,
) -> float:
    prefix = "{bench-pipe-" + uuid.uuid4().hex[:8] + "}:"
    settings = WorkerSettings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=prefix,
        batch_size=batch,
        pipeline=pipeline,
        max_pending=100_000,
        max_pending_per_guild=100_000,
        max_pending_per_user=100_000,
    )
    redis = Redis.from_url(redis_url)
    try:
        client = QueueClient(redis, settings, instance_id="bench", require_worker=False)
        spec = TaskSpec.build("caption")
        for n, data in enumerate(pictures):
            job = client.new_job(spec, guild_id=str(n % 4), user_id=str(n), context={})
            await client.submit(job, data)
        worker = Worker(redis, settings, engine, worker_id="bench-" + uuid.uuid4().hex[:6])
        started = time.perf_counter()
        assert await worker.run(burst=True) == 0
        elapsed = time.perf_counter() - started
        assert await client.pending() == 0
        return len(pictures) / elapsed
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()


def _measure(mode: str, args: argparse.Namespace) -> float:
    settings = EngineSettings(
        _env_file=None, model_id=args.model, batch_size=args.batch, torch_threads=args.threads
    )
    if mode == "pipelined-thread":
        settings = settings.model_copy(update={"prepare_processes": 0})
    engine = PaliGemmaEngine.from_settings(settings)
    pictures = _pictures(args.images, args.size)
    engine.warmup()  # starts the preparing processes before the clock does
    try:
        if mode == "raw":
            return _raw(engine, pictures, args.batch)
        pipeline = mode != "serial"
        return asyncio.run(_through_worker(engine, pictures, args.batch, pipeline=pipeline))
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="picture side, pixels")
    parser.add_argument("--model", default=str(DEMO_MODEL))
    parser.add_argument("--threads", type=int, help="torch threads (default: cores - 1)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one measurement
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_measure(args.mode, args)))
        return
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    passed = [a for a in sys.argv[1:] if not a.startswith("--mode")]
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, "-m", "bench.pipeline", *passed, "--mode", mode],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rates[mode].append(float(out.stdout.strip().splitlines()[-1]))
    r, p, t, s = (statistics.median(rates[m]) for m in MODES)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{cpu_threads(torch.device('cpu'), args.threads)} torch threads, "
        f"torch {torch.__version__}; {args.images} pictures of {args.size} px, batch {args.batch}"
    )
    print(f"  raw generate on prepared inputs: {r:7.1f} images/s")
    print(f"  worker, pipelined:               {p:7.1f} images/s  ({p / r:.2f} of raw)")
    print(f"  worker, pipelined, prep thread:  {t:7.1f} images/s  ({t / r:.2f} of raw)")
    print(f"  worker, one batch at a time:     {s:7.1f} images/s  ({s / r:.2f} of raw)")


if __name__ == "__main__":
    main()
