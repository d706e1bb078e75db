"""The GPU worker service, `python -m inference.worker` (see `__main__`).

service.py    the loop: take a fair batch, run it, publish; keep-alive and watchdog
taking.py     taking batches from the queue (linger, suspects alone) and waiting for work
runner.py     one batch on the engine: failing rows isolated by halving; fatal errors stop
outcomes.py   each taken job's one outcome, published idempotently
presence.py   the heartbeat that makes the bot count this worker
metrics.py    what the worker reports to Prometheus
testing.py    stand-in engines for tests and benchmarks (no torch)
"""

from __future__ import annotations

from inference.worker.service import EXIT_ENGINE_HUNG, EXIT_FATAL_ENGINE, EXIT_OK, Worker

__all__ = ["EXIT_ENGINE_HUNG", "EXIT_FATAL_ENGINE", "EXIT_OK", "Worker"]
