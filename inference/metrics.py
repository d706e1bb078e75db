"""Queue metrics kept in Redis: per-minute counters and capped lists of recent samples.

Workers write with one pipelined round trip per batch, after its results are published,
so metrics never delay an answer. Any process can read them back with `read_metrics`.
Counters: jobs_ok, jobs_error, jobs_timed_out, jobs_dead_lettered, malformed, batches,
oom_splits. Samples: queue_wait_ms, run_ms, batch_size, queue_depth.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from inference.keys import Keys

MINUTE_TTL_S = 24 * 3600
SAMPLE_NAMES = ("queue_wait_ms", "run_ms", "batch_size", "queue_depth")


class MetricsRecorder:
    """Writes counters and samples for one queue."""

    def __init__(self, redis: Redis, keys: Keys, *, max_samples: int = 2_000) -> None:
        self._redis = redis
        self._keys = keys
        self._max_samples = max_samples

    async def record(
        self,
        counters: Mapping[str, int],
        samples: Mapping[str, Sequence[float]],
        *,
        now: float | None = None,
    ) -> None:
        """Add `counters` to this minute's totals and push `samples` onto their lists."""
        minute = int((time.time() if now is None else now) // 60)
        pipe = self._redis.pipeline(transaction=False)
        key = self._keys.metrics_minute(minute)
        for name, value in counters.items():
            if value:
                pipe.hincrby(key, name, value)
        pipe.expire(key, MINUTE_TTL_S)
        for name, values in samples.items():
            if values:
                skey = self._keys.metrics_samples(name)
                pipe.lpush(skey, *(f"{v:.3f}" for v in values))
                pipe.ltrim(skey, 0, self._max_samples - 1)
        await pipe.execute()


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Counters summed over recent minutes, and the latest samples (newest first)."""

    counters: dict[str, int]
    samples: dict[str, list[float]]

    def percentile(self, name: str, q: float) -> float | None:
        """The q-th percentile (0-100, nearest rank) of sample `name`, or None if empty."""
        values = sorted(self.samples.get(name, []))
        if not values:
            return None
        rank = max(1, math.ceil(q / 100 * len(values)))
        return values[min(rank, len(values)) - 1]


async def read_metrics(
    redis: Redis, keys: Keys, *, minutes: int = 5, now: float | None = None
) -> MetricsSnapshot:
    """Read the counters of the last `minutes` minutes and all kept samples."""
    current = int((time.time() if now is None else now) // 60)
    pipe = redis.pipeline(transaction=False)
    for minute in range(current - minutes + 1, current + 1):
        pipe.hgetall(keys.metrics_minute(minute))
    for name in SAMPLE_NAMES:
        pipe.lrange(keys.metrics_samples(name), 0, -1)
    replies = await pipe.execute()
    counters: dict[str, int] = {}
    for hash_ in replies[:minutes]:
        for name, value in hash_.items():
            key = name.decode() if isinstance(name, bytes) else str(name)
            counters[key] = counters.get(key, 0) + int(value)
    samples = {
        name: [float(v) for v in values]
        for name, values in zip(SAMPLE_NAMES, replies[minutes:], strict=True)
    }
    return MetricsSnapshot(counters=counters, samples=samples)
