"""Stand-in engines for queue tests and benchmarks, shipped with the worker as a test seam
(like httpx's MockTransport). Select one on the command line, e.g.::

    python -m inference.worker --engine inference.worker.testing:sleep_engine \
        --engine-option sleep_s=0.5

A factory takes the WorkerSettings and the `--engine-option` values as keyword strings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from inference.engine_api import NoopEngine
from inference.queue_settings import WorkerSettings
from inference.tasks import InferenceRequest, InferenceResult, Task


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the worker recognises by name."""


class SleepEngine:
    """Sleeps `sleep_s` per batch and answers "ok"; can fake GPU errors."""

    def __init__(
        self,
        sleep_s: float = 0.0,
        *,
        model_id: str = "sleep",
        capabilities: frozenset[Task] = frozenset(Task),
        oom_above: int | None = None,
        cuda_error: bool = False,
        mark_path: str | None = None,
    ) -> None:
        self.sleep_s = sleep_s
        self._model_id = model_id
        self._capabilities = capabilities
        self.oom_above = oom_above  # batches larger than this raise OutOfMemoryError
        self.cuda_error = cuda_error
        self.mark_path = mark_path  # a line per started batch is appended here
        self.batches: list[int] = []  # sizes of the batches that ran

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> frozenset[Task]:
        return self._capabilities

    def warmup(self) -> None:
        return None

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        if self.cuda_error:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.oom_above is not None and len(requests) > self.oom_above:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.mark_path:
            # Tests wait for this line to know a batch is running (no guessing with sleeps).
            with open(self.mark_path, "a", encoding="utf-8") as f:
                f.write(f"{len(requests)}\n")
        time.sleep(self.sleep_s)
        self.batches.append(len(requests))
        return [InferenceResult(task=r.spec.task, text="ok") for r in requests]


def noop_engine(settings: WorkerSettings) -> NoopEngine:
    """The no-op engine (answers instantly)."""
    return NoopEngine()


def sleep_engine(
    settings: WorkerSettings,
    *,
    sleep_s: str = "0",
    capabilities: str = "",
    oom_above: str = "",
    cuda_error: str = "",
    mark_path: str = "",
) -> SleepEngine:
    """A SleepEngine; `capabilities` is a comma-separated task list (default: all)."""
    caps = frozenset(Task(c) for c in capabilities.split(",") if c) or frozenset(Task)
    return SleepEngine(
        float(sleep_s),
        capabilities=caps,
        oom_above=int(oom_above) if oom_above else None,
        cuda_error=cuda_error == "1",
        mark_path=mark_path or None,
    )
