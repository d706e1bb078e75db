"""Running one batch on the engine: the one policy for failing rows.

A batch that fails (GPU out-of-memory, or any error one row brings on its batch) is
retried as halves; a half that succeeds is answered, and a single request that still
fails gets its own error. One bad row among n costs at most 2*ceil(log2 n) + 1 generate
calls, and everyone else is answered in batches, never one by one. Fatal CUDA errors stop
the process (`FatalEngineError`).

Blocking; the worker calls it in a thread (`asyncio.to_thread`) so that its event loop
keeps extending leases while the GPU works. torch is never imported here: errors are
recognised by class name and message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence

from inference.engine import Engine, is_fatal_device_error, is_out_of_memory
from inference.errors import GenerationError
from inference.tasks import InferenceRequest, InferenceResult

log = logging.getLogger(__name__)


class FatalEngineError(Exception):
    """The device is in an unknown state (a CUDA error other than out-of-memory); the
    process must exit so that its supervisor restarts it."""


def _failed(request: InferenceRequest) -> InferenceResult:
    return InferenceResult(
        task=request.spec.task,
        text="",
        error=GenerationError.code,
        error_message=GenerationError.default_message,
    )


def generate_resilient(
    engine: Engine,
    requests: Sequence[InferenceRequest],
    stop: threading.Event | None = None,
) -> list[InferenceResult | None]:
    """Run `requests`; on OOM (or any other error) retry as halves, down to single
    requests, which then fail alone. A result is None for a request not started because
    `stop` was set between halves. Raises FatalEngineError."""
    results: list[InferenceResult | None] = []
    pending: list[Sequence[InferenceRequest]] = [requests]
    while pending:
        chunk = pending.pop(0)
        if stop is not None and stop.is_set() and results:
            # Shutting down: the chunks not yet started go back to the queue.
            results.extend([None] * (len(chunk) + sum(len(c) for c in pending)))
            break
        try:
            out = engine.generate(chunk)
            if len(out) != len(chunk):
                raise RuntimeError(f"engine returned {len(out)} results for {len(chunk)}")
            results.extend(out)
        except Exception as exc:
            if is_fatal_device_error(exc):
                raise FatalEngineError(str(exc)) from exc
            if len(chunk) == 1:
                log.error("request failed alone: %s: %s", type(exc).__name__, exc)
                # A row's own failure is a bug to find, but the CLI's stderr stays one line.
                log.debug("the request's traceback", exc_info=exc)
                results.append(_failed(chunk[0]))
                continue
            kind = "out of memory" if is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
            log.warning("batch of %d failed (%s); retrying as halves", len(chunk), kind)
            mid = len(chunk) // 2
            pending[:0] = [chunk[:mid], chunk[mid:]]
    return results


class Watchdog:
    """What is on the engine now, and whether it has run past `max_batch_run_s`: a wedged
    device hangs `generate()` while the event loop runs on (see `inference.worker.service`)."""

    def __init__(self, max_batch_run_s: float) -> None:
        self._max_batch_run_s = max_batch_run_s
        self._on_engine: tuple[int, float] | None = None  # (requests, monotonic start)

    @contextlib.contextmanager
    def running(self, requests: int) -> Iterator[None]:
        """Around one `generate_resilient` call of `requests` requests."""
        self._on_engine = (requests, time.monotonic())
        try:
            yield
        finally:
            self._on_engine = None

    def hung(self) -> bool:
        """True (and logged) once the batch on the engine has run past max_batch_run_s."""
        if self._on_engine is None:
            return False
        requests, started = self._on_engine
        elapsed_s = time.monotonic() - started
        if elapsed_s <= self._max_batch_run_s:
            return False
        log.error(
            "engine hung: a batch of %d requests has run %.1f s (max_batch_run_s %.1f); "
            "giving up its leases and exiting for a restart",
            requests,
            elapsed_s,
            self._max_batch_run_s,
        )
        return True
