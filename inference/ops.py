"""Operations for both programs: Prometheus metrics and health over HTTP, and JSON logs.

One small server per process on METRICS_HOST:METRICS_PORT (the bot's default port 9101,
the worker's 9102; 0 turns it off), in a thread of its own so that a busy event loop or a
long batch never delays a scrape:

    /metrics   prometheus-client's exposition of the process's registry
    /healthz   200 while the process runs (and, where given, its event loop still turns)
    /readyz    200 when the program can do its work (its `ready()` says so), else 503

Torch-free: the bot imports it. Metric names start with `palicord_`; figures per guild
appear only as counts and distributions, never as one label per guild.

With LOG_FORMAT=json every log line is one JSON object (time, level, logger, message,
exception) carrying the ids bound with `log_ids(...)` where it was written: the job ids of
the batch a worker runs, the request id the bot is taking or answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

BOT_METRICS_PORT = 9101
WORKER_METRICS_PORT = 9102
# Prometheus buckets for waits and runs: a caption takes a fraction of a second on a GPU,
# a queue wait can reach the job deadline (14 minutes).
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ops endpoint: " + format, *args)


@dataclass
class OpsServer:
    """A running metrics and health server; `port` is the one it listens on."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def resolve_port(configured: int | None, program_default: int) -> int:
    """METRICS_PORT if set (0: off), else the program's own default."""
    return program_default if configured is None else configured


class LoopWatch:
    """Whether an asyncio loop still turns: `run()` ticks every `interval_s`, and `alive()`
    holds while the last tick is younger than `stall_s`. The endpoints run in a thread of
    their own, so without this /healthz would answer 200 for a process whose loop is stuck
    (and whose Discord heartbeats, replies and results all stopped with it)."""

    def __init__(self, *, stall_s: float = 30.0, interval_s: float = 1.0) -> None:
        self._stall_s, self._interval_s = stall_s, interval_s
        self._last = time.monotonic()  # a loop about to start counts as turning

    async def run(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(self._interval_s)

    def alive(self) -> bool:
        return time.monotonic() - self._last < self._stall_s


def _app(
    registry: CollectorRegistry, ready: Callable[[], bool], alive: Callable[[], bool]
) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            status, body = (
                ("200 OK", b"ok\n") if alive() else ("503 Service Unavailable", b"stalled\n")
            )
        elif path == "/readyz":
            try:
                is_ready = ready()
            except Exception:
                log.exception("readiness check failed")
                is_ready = False
            status, body = (
                ("200 OK", b"ready\n") if is_ready else ("503 Service Unavailable", b"not ready\n")
            )
        else:
            status, body = "404 Not Found", b"not found\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


def serve_ops(
    host: str,
    port: int,
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    alive: Callable[[], bool] = lambda: True,
) -> OpsServer | None:
    """Start the server in a daemon thread; None when `port` is 0 (turned off), or when it
    cannot listen there (logged: serving without metrics beats not serving, and the probes
    that need them will say so). `alive` decides /healthz (see `LoopWatch`)."""
    if port == 0:
        return None
    try:
        server = make_server(
            host,
            port,
            _app(registry, ready, alive),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        log.warning(
            "no metrics or health endpoints: cannot listen on %s:%d (%s); set METRICS_PORT",
            host,
            port,
            exc,
        )
        return None
    thread = threading.Thread(target=server.serve_forever, name="palicord-ops", daemon=True)
    thread.start()
    bound = int(server.server_address[1])
    log.info("metrics and health on http://%s:%d/ (/metrics, /healthz, /readyz)", host, bound)
    return OpsServer(bound, server, thread)


# --- logs -------------------------------------------------------------------------------

# Immutable pairs: a context variable's default is shared by every context.
_LOG_IDS: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "log_ids", default=()
)


@contextlib.contextmanager
def log_ids(**ids: str) -> Iterator[None]:
    """Attach these ids (job_id, request_id, ...) to every log line written inside."""
    token = _LOG_IDS.set(tuple({**dict(_LOG_IDS.get()), **ids}.items()))
    try:
        yield
    finally:
        _LOG_IDS.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the ids bound by `log_ids`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **dict(_LOG_IDS.get()),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # already formatted (and cleaned) by a log filter
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def use_log_format(log_format: str) -> None:
    """Switch the root logger's handlers to JSON lines ("json"); "text" keeps them."""
    if log_format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
