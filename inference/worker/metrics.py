"""What a worker reports to Prometheus (served by `inference.ops`).

Per job: its outcome (answered, an error code, timed out, dead-lettered, malformed) and
how long it waited in line; per batch: its size and engine time; per keep-alive tick, a
sample of the shared queue (depth, guilds waiting, workers alive), so that any worker's
endpoint shows the whole queue; on CUDA, the device memory in use and reserved; and the
image-feature cache's hits, misses and size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference.errors import JobTimedOut
from inference.ops import SECONDS_BUCKETS
from inference.worker.outcomes import Outcome

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def outcome_labels(outcome: Outcome) -> tuple[str, str]:
    """(outcome, code): a bounded set of label values, whatever the job."""
    if outcome.dead_letter_reason == "malformed":
        return "malformed", "malformed"
    if outcome.dead_letter_reason is not None:
        return "dead_lettered", outcome.dead_letter_reason
    result = outcome.result
    if result is None or result.error is None:
        return "answered", ""
    if result.error == JobTimedOut.code:
        return "timed_out", result.error
    return "error", result.error


class WorkerMetrics:
    """The worker's metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "palicord_jobs", "Jobs this worker settled, by outcome", ["outcome", "code"], registry=r
        )
        self.queue_wait = Histogram(
            "palicord_queue_wait_seconds",
            "Time from submission to being taken by a worker",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_run = Histogram(
            "palicord_batch_run_seconds",
            "Engine time of one batch",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "palicord_batch_size", "Jobs per batch taken", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "palicord_queue_depth", "Jobs queued or running, all guilds", registry=r
        )
        self.guilds_waiting = Gauge(
            "palicord_guilds_waiting", "Guilds with jobs waiting in line", registry=r
        )
        self.workers_alive = Gauge(
            "palicord_workers_alive", "Workers whose heartbeat is current", registry=r
        )
        self.device_memory = Gauge(
            "palicord_gpu_memory_bytes",
            "Accelerator memory of this worker's engine (CUDA only)",
            ["kind"],
            registry=r,
        )
        self.feature_lookups = Counter(
            "palicord_feature_cache_lookups",
            "Pictures looked up in this worker's image-feature cache, by result",
            ["result"],
            registry=r,
        )
        self.feature_bytes = Gauge(
            "palicord_feature_cache_bytes", "Image features this worker keeps", registry=r
        )
        self._feature_counts: dict[str, int] = {}

    def settled(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            self.jobs.labels(*outcome_labels(outcome)).inc()
            result = outcome.result
            if result is not None and result.queue_wait_s is not None:
                self.queue_wait.observe(result.queue_wait_s)

    def queue(self, *, depth: int, guilds_waiting: int, workers_alive: int) -> None:
        self.queue_depth.set(depth)
        self.guilds_waiting.set(guilds_waiting)
        self.workers_alive.set(workers_alive)

    def memory(self, used: Mapping[str, int]) -> None:
        for kind, value in used.items():
            self.device_memory.labels(kind).set(value)

    def features(self, stats: Mapping[str, int]) -> None:
        """Sample the engine's cumulative cache counts into counters (by their increase)."""
        for result, key in (("hit", "hits"), ("miss", "misses")):
            if key not in stats:
                continue
            seen = self._feature_counts.get(key, 0)
            # A count below the last one means the engine's cache was reset (warm-up).
            increase = stats[key] - seen if stats[key] >= seen else stats[key]
            self.feature_lookups.labels(result).inc(increase)
            self._feature_counts[key] = stats[key]
        if "bytes" in stats:
            self.feature_bytes.set(stats["bytes"])
