"""The small interface between the worker loop and a model (after TGI's `Model`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inference.tasks import InferenceRequest, InferenceResult, Task


class Engine(Protocol):
    """Runs batches of requests; one result per request, in order, never raising for a
    single bad request (that request gets an error result instead)."""

    @property
    def model_id(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Task]: ...

    def warmup(self) -> None: ...

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]: ...


class NoopEngine:
    """Answers instantly without a model; for queue benchmarks and queue-only tests."""

    def __init__(self, model_id: str = "noop") -> None:
        self._model_id = model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> frozenset[Task]:
        return frozenset(Task)

    def warmup(self) -> None:
        return None

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        return [InferenceResult(task=r.spec.task, text="ok") for r in requests]
