"""Whole processes: starting worker processes on a test's key prefix, and scraping the
operations endpoints (/metrics, /readyz) that every process serves."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.queue import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(prefix: str, engine: str, *options: str, **env: str) -> subprocess.Popen[bytes]:
    """`python -m inference.worker` as a real process, serving this test's key prefix with a
    stand-in engine of `inference.worker.testing` (`engine` names its factory); `options`
    are its KEY=VALUE engine options, `env` settings as environment variables."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "IDLE_WAIT_S": "0.2",
        "METRICS_PORT": "0",  # several at once on one host: no port to share
        **env,
    }
    args = [sys.executable, "-m", "inference.worker", "--log-level", "WARNING", "--engine"]
    args += [f"inference.worker.testing:{engine}"]
    for option in options:
        args += ["--engine-option", option]
    return subprocess.Popen(args, env=full_env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it outstays `timeout_s`; the exit status."""
    proc.terminate()
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def until_ready(base: str, *, timeout_s: float) -> None:
    """Poll a process's /readyz until it answers 200 (it has no other way to tell us)."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if (await asyncio.to_thread(get, base + "/readyz"))[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
