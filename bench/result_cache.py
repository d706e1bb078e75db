"""Cached against computed answers, through the bot path, side by side in one run.

    python -m bench.result_cache [--rounds 20] [--model models/palicord-tiny]

The real bot against the local Discord-compatible server, with an in-process worker
running the demo model (real transformers code, CPU). Each round sends /describe on a
new picture (a miss: queued, computed) and then on the same picture again from another
user (a hit: answered from the shared cache). Prints the median time from the interaction
to its answer for both, their ratio, how many batches the worker ran for the hits (0
expected), and the Redis memory each kept picture and each kept answer take.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis

from inference.demo.shapes import encode_png, make_scene
from inference.engine.paligemma import PaliGemmaEngine
from inference.queue import Keys
from inference.queue.memory import PICTURE, RESULT
from inference.settings import EngineSettings
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    delete_prefix,
    running_bot,
    running_worker,
    worker_settings,
)
from tests.support.queue import RecordingWorker

ROOT = Path(__file__).resolve().parent.parent


async def _timed(server: DiscordServer, data: bytes, user: str) -> float:
    image = server.attachment(data, f"{uuid.uuid4().hex[:6]}.png")
    started = time.perf_counter()
    state = await server.slash("describe", user=server.user(user), attachments={"image": image})
    await answer_for(server, state, timeout_s=120)
    return time.perf_counter() - started


async def _memory_per_item(redis: Redis, keys: Keys, kind: str) -> float:
    total = int(await redis.get(keys.stash_bytes(kind)) or 0)
    kept = await redis.zrange(keys.stash_index(kind), 0, -1)
    usage = [int(await redis.memory_usage(keys.stash(kind, m.decode())) or 0) for m in kept]
    count = len(usage)
    print(f"  {kind}s kept: {count}, payload {total / max(count, 1) / 1024:.1f} KiB each, "
          f"Redis MEMORY USAGE {statistics.mean(usage or [0]) / 1024:.1f} KiB each")  # fmt: skip
    return statistics.mean(usage or [0])


async def main(rounds: int, model: str) -> None:
    prefix = "{bench-cache-" + uuid.uuid4().hex[:8] + "}:"
    engine = PaliGemmaEngine.from_settings(EngineSettings(model_id=model, hf_offline=True))
    server = DiscordServer()
    await server.start()
    redis = Redis.from_url(REDIS_URL)
    try:
        settings = worker_settings(prefix)
        async with (
            running_worker(settings, engine, kind=RecordingWorker) as worker,
            running_bot(bot_settings(server, prefix)),
        ):
            assert isinstance(worker, RecordingWorker)
            rng = random.Random(7)
            misses: list[float] = []
            hits: list[float] = []
            hit_batches = 0
            for n in range(rounds):
                data = encode_png(make_scene(rng).image)
                misses.append(await _timed(server, data, f"a{n}"))
                before = len(worker.batches_taken)
                hits.append(await _timed(server, data, f"b{n}"))
                hit_batches += len(worker.batches_taken) - before
            miss, hit = statistics.median(misses), statistics.median(hits)
            print(f"describe through the bot, {rounds} rounds, model {model} on the CPU:")
            print(f"  computed (miss): median {miss * 1000:.0f} ms")
            print(f"  cached (hit):    median {hit * 1000:.0f} ms  ({miss / hit:.1f}x faster)")
            print(f"  batches the worker ran for the hits: {hit_batches}")
            keys = Keys(prefix)
            await _memory_per_item(redis, keys, PICTURE)
            await _memory_per_item(redis, keys, RESULT)
    finally:
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model", default=str(ROOT / "models" / "palicord-tiny"))
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.model))
