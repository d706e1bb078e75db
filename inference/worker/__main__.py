"""`python -m inference.worker`: the GPU worker service.

Configured from the environment and `.env` (REDIS_URL, KEY_PREFIX, MODEL_ID, QUANTIZATION,
BATCH_SIZE, LEASE_S, MAX_ATTEMPTS, ...: see `inference.settings.WorkerSettings`).
`--engine module:factory` swaps the model for another engine (a factory called with the
settings and `--engine-option KEY=VALUE` pairs), e.g. the stand-ins in
`inference.worker.testing`. `--burst` drains the queue and exits.

Exit status: 0 after SIGTERM/SIGINT or a finished burst; 3 after an unrecoverable CUDA
error and 4 when a batch runs past MAX_BATCH_RUN_S (a hung engine), so that a supervisor
restarts the process; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import cast

from inference.engine import Engine
from inference.ops import WORKER_METRICS_PORT, resolve_port, serve_ops, use_log_format
from inference.queue import connect
from inference.queue.keys import check_part
from inference.settings import WorkerSettings, config_error
from inference.worker.metrics import WorkerMetrics
from inference.worker.service import EXIT_ENGINE_HUNG, Worker

log = logging.getLogger("inference.worker")

EngineFactory = Callable[..., Engine]


def _default_engine(settings: WorkerSettings) -> Engine:
    # Imported here so that engine stand-ins (tests, benchmarks) never load torch.
    from inference.engine.paligemma import PaliGemmaEngine

    return PaliGemmaEngine.from_settings(settings)


def load_factory(spec: str | None) -> EngineFactory:
    """Resolve `module:attribute` (or "noop") to an engine factory."""
    if spec is None:
        return _default_engine
    if spec == "noop":
        spec = "inference.worker.testing:noop_engine"
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--engine must look like module:factory, not {spec!r}")
    return cast(EngineFactory, getattr(importlib.import_module(module_name), attr))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m inference.worker", description=__doc__)
    parser.add_argument("--engine", help="module:factory of the engine (default: PaliGemma)")
    parser.add_argument(
        "--engine-option", action="append", default=[], metavar="KEY=VALUE",
        help="keyword argument for the engine factory (repeatable)",
    )  # fmt: skip
    parser.add_argument("--burst", action="store_true", help="drain the queue, then exit")
    parser.add_argument("--worker-id", default="", help="default: WORKER_ID or host-pid-random")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(
    settings: WorkerSettings,
    engine: Engine,
    *,
    burst: bool,
    metrics: WorkerMetrics | None = None,
    on_worker: Callable[[Worker], None] | None = None,
) -> int:
    """Connect, run a Worker until a signal (or an empty queue in burst mode); exit code."""
    redis = connect(settings)
    worker = Worker(redis, settings, engine, metrics=metrics)
    if on_worker is not None:
        on_worker(worker)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        code = await worker.run(burst=burst)
    finally:
        await redis.aclose()
    if code == EXIT_ENGINE_HUNG:
        # The engine's thread cannot be stopped, and a normal exit would wait for it
        # forever (asyncio.run joins its executor, the interpreter its threads).
        logging.shutdown()
        os._exit(code)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: build the settings once, load the engine, serve."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = WorkerSettings()
        if args.worker_id:
            settings = settings.model_copy(update={"worker_id": check_part(args.worker_id)})
        use_log_format(settings.log_format)
        options = dict(opt.split("=", 1) for opt in args.engine_option)
        factory = load_factory(args.engine)
    except ValueError as exc:  # pydantic's ValidationError included: names, never values
        log.error("bad configuration: %s", config_error(exc))
        return 2
    # Served from before the model loads: /healthz answers at once, /readyz once the worker
    # has warmed up and reached Redis.
    metrics = WorkerMetrics()
    workers: list[Worker] = []
    port = resolve_port(settings.metrics_port, WORKER_METRICS_PORT)
    ops = serve_ops(
        settings.metrics_host, port, metrics.registry, lambda: any(w.ready for w in workers)
    )
    try:
        engine = factory(settings, **options)
        try:
            return asyncio.run(
                serve(settings, engine, burst=args.burst, metrics=metrics, on_worker=workers.append)
            )
        finally:
            engine.close()
    finally:
        if ops is not None:
            ops.close()


if __name__ == "__main__":
    sys.exit(main())
