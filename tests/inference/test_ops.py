"""inference.ops: health answers, and JSON log lines that carry the job and request ids."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from inference.ops import (
    JsonFormatter,
    LoopWatch,
    log_ids,
    resolve_port,
    serve_ops,
    use_log_format,
)
from inference.queue import QueueClient
from inference.settings import WorkerSettings
from sandbox.stack import free_port
from tests.support.processes import ROOT, get
from tests.support.queue import REDIS_URL, submit


def test_json_lines_carry_the_bound_ids() -> None:
    record = logging.LogRecord("palicord.test", logging.WARNING, __file__, 1, "%s jobs", (3,), None)
    with log_ids(request_id="r1"), log_ids(job_id="j2"):
        inside = json.loads(JsonFormatter().format(record))
    outside = json.loads(JsonFormatter().format(record))
    assert inside["message"] == "3 jobs" and inside["level"] == "WARNING"
    assert (inside["request_id"], inside["job_id"]) == ("r1", "j2")
    assert "request_id" not in outside and outside["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        failed.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]


def test_use_log_format_switches_the_root_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logging.StreamHandler()
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    use_log_format("text")
    assert not isinstance(handler.formatter, JsonFormatter)
    use_log_format("json")
    assert isinstance(handler.formatter, JsonFormatter)


def test_ports_health_and_readiness() -> None:
    assert (resolve_port(None, 9102), resolve_port(0, 9102), resolve_port(9200, 9102)) == (
        9102,
        0,
        9200,
    )
    assert serve_ops("127.0.0.1", 0, CollectorRegistry(), lambda: True) is None  # 0: off
    ready = [False]
    ops = serve_ops("127.0.0.1", free_port(), CollectorRegistry(), lambda: ready[0])
    assert ops is not None
    try:
        base = f"http://127.0.0.1:{ops.port}"
        assert get(base + "/healthz") == (200, "ok\n")
        assert get(base + "/readyz")[0] == 503
        ready[0] = True
        assert get(base + "/readyz")[0] == 200
        assert get(base + "/nothing")[0] == 404
        # A port already taken: the program goes on without endpoints, and says so.
        assert serve_ops("127.0.0.1", ops.port, CollectorRegistry(), lambda: True) is None
    finally:
        ops.close()


async def test_healthz_fails_while_the_event_loop_is_stuck() -> None:
    watch = LoopWatch(stall_s=0.2, interval_s=0.02)
    ticking = asyncio.create_task(watch.run())
    ops = serve_ops("127.0.0.1", free_port(), CollectorRegistry(), lambda: True, watch.alive)
    assert ops is not None
    base = f"http://127.0.0.1:{ops.port}"
    try:
        await asyncio.sleep(0.05)
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        time.sleep(0.3)  # noqa: ASYNC251 (the point: a blocking call stalls the loop)
        # The loop is still stuck here; the endpoint's own thread answers.
        assert get(base + "/healthz") == (503, "stalled\n")
        await asyncio.sleep(0.05)  # the loop turns again
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
    finally:
        ops.close()
        ticking.cancel()


def json_logging_worker(prefix: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "METRICS_PORT": "0",
        "LOG_FORMAT": "json",
    }
    args = [sys.executable, "-m", "inference.worker", "--engine", "noop"]
    return subprocess.Popen(args, env=env, cwd=ROOT, stderr=subprocess.PIPE)


async def test_a_worker_logs_json_with_the_job_ids_of_its_batch(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    planted = await submit(queue_client)
    await redis.hset(queue_client.keys.job(planted.job_id), "data", "not json")  # type: ignore[misc]
    proc = json_logging_worker(worker_settings.key_prefix)
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = await asyncio.to_thread(proc.stderr.readline)
                assert line, "the worker exited"
                entry = json.loads(line)  # every line is one JSON object
                if "malformed" in entry["message"]:
                    break
        assert entry["job_ids"] == planted.job_id and entry["level"] == "WARNING"
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 10)
