"""The GPU worker service: `python -m inference.worker` (see `__main__`)."""

from __future__ import annotations

from inference.worker.service import EXIT_ENGINE_HUNG, EXIT_FATAL_ENGINE, EXIT_OK, Worker

__all__ = ["EXIT_ENGINE_HUNG", "EXIT_FATAL_ENGINE", "EXIT_OK", "Worker"]
