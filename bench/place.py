"""Place in line with many servers waiting: the Redis time of one position lookup and of
one progress round, at 10, 500 and 5,000 waiting servers.

    .venv/bin/python -m bench.place [--servers 10,500,5000] [--lookups 200]

Runs on a private `redis-server` (started here on a free port) so that its command
statistics (`INFO commandstats`, reset before each measurement) hold only this bench's
calls: the figures are Redis's own time inside the scripts, without the network. Each
waiting server has two people with one request each. A position lookup is `status` on a
random waiting job (`--lookups` of them, averaged); a progress round is what the bot does
every PROGRESS_INTERVAL_S when every server has a request in progress: `status` on every
waiting job once. Also prints the Redis commands one lookup runs (inside the script) and
the mean Redis time of a submit while the servers filled up (it computes a place too, and
keeps the index up to date).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid

from redis.asyncio import Redis

from inference.queue import QueueClient, QueueSettings
from inference.tasks import TaskSpec
from tests.support.redis_server import own_redis_server


async def _fill(client: QueueClient, servers: int) -> list[str]:
    spec = TaskSpec.build("caption")
    ids: list[str] = []
    for g in range(servers):
        for u in range(2):
            job = client.new_job(spec, guild_id=str(1000 + g), user_id=str(10 * g + u))
            ids.append((await client.submit(job, b"x")).job_id)
    return ids


async def _stats(redis: Redis) -> tuple[float, int]:
    """(µs spent in EVALSHA, commands run other than EVALSHA/INFO/CONFIG) since the reset."""
    info = await redis.info("commandstats")
    usec, calls = 0.0, 0
    for name, stat in info.items():
        if name == "cmdstat_evalsha":
            usec += float(stat["usec"])
        elif name not in ("cmdstat_info", "cmdstat_config"):
            calls += int(stat["calls"])
    return usec, calls


async def measure(url: str, servers: int, lookups: int) -> tuple[float, float, float, float]:
    """(µs per lookup, commands per lookup, ms per progress round, µs per submit)."""
    redis = Redis.from_url(url)
    settings = QueueSettings(
        key_prefix=f"{{bench-{uuid.uuid4().hex[:8]}}}:",
        max_pending=10 * servers + 100,
    )
    client = QueueClient(redis, settings, instance_id="bench", require_worker=False)
    await redis.config_resetstat()
    ids = await _fill(client, servers)
    fill_usec, _ = await _stats(redis)
    sample = random.Random(1).choices(ids, k=lookups)
    await redis.config_resetstat()
    for job_id in sample:
        await client.status(job_id)
    usec, calls = await _stats(redis)
    await redis.config_resetstat()
    for job_id in ids:
        await client.status(job_id)
    round_usec, _ = await _stats(redis)
    await redis.aclose()
    return usec / lookups, calls / lookups, round_usec / 1000, fill_usec / len(ids)


async def run(servers: list[int], lookups: int) -> None:
    with own_redis_server() as url:
        print(
            f"{'waiting servers':>16} {'lookup µs':>10} {'commands':>9} {'progress round':>15}"
            f" {'submit µs':>10}"
        )
        for n in servers:
            lookup_us, commands, round_ms, submit_us = await measure(url, n, lookups)
            print(
                f"{n:>16} {lookup_us:>10.0f} {commands:>9.0f} {round_ms:>12.1f} ms"
                f" {submit_us:>10.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="10,500,5000")
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run([int(n) for n in args.servers.split(",")], args.lookups))


if __name__ == "__main__":
    main()
