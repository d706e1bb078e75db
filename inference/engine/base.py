"""The small interface between the worker loop and a model (after TGI's `Model`), and the
one definition of which accelerator failures are recoverable.

Torch-free: the worker loop imports this without loading a model, and recognises torch's
errors by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inference.tasks import InferenceRequest, InferenceResult, Task


class Engine(Protocol):
    """Runs batches of requests; one result per request, in order. A bad picture gets an
    error result; a generation that fails raises for the whole call, and
    `inference.worker.runner.generate_resilient` isolates the row behind it."""

    @property
    def model_id(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[Task]: ...

    def warmup(self) -> None: ...

    def prepare(self, requests: Sequence[InferenceRequest]) -> list[InferenceRequest]:
        """The CPU work of a batch done ahead of `generate` (decoding, resizing,
        tokenising), called from a thread of its own while the previous batch generates.
        Must not raise for a bad image: `generate` reports it. `generate` also accepts
        unprepared requests."""
        ...

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]: ...

    def device_memory(self) -> dict[str, int]:
        """Accelerator bytes by kind ("allocated", "reserved"); empty off the GPU."""
        ...

    def feature_cache(self) -> dict[str, int]:
        """The image-feature cache's counters ("hits", "misses", "bytes"); empty without one."""
        ...

    def close(self) -> None:
        """Release what the engine started beside the model (its preparing processes)."""
        ...


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's (CUDA) OutOfMemoryError, by class name so torch stays unimported."""
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)


def is_fatal_device_error(exc: BaseException) -> bool:
    """True for CUDA errors that leave the device unusable (not out-of-memory)."""
    if is_out_of_memory(exc):
        return False
    module = type(exc).__module__ or ""
    # torch raises RuntimeError("CUDA error: ...") or, since 2.8, torch.AcceleratorError.
    return (
        "CUDA error" in str(exc)
        or module.startswith("torch.cuda")
        or type(exc).__name__ == "AcceleratorError"
    )
