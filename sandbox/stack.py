"""The processes `python -m sandbox` runs: Redis (found or started), the real worker and the
real bot, each as it runs in production (`python -m inference.worker`, `python -m bot`),
configured through the environment only.

Children get SIGTERM when the sandbox itself dies, even by SIGKILL (Linux's parent-death
signal), so no worker keeps a GPU or a port after its parent is gone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sandbox")

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the server will bind: a port in TIME_WAIT after a previous run is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def redis_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """A Redis PING without a client library: any server answering +PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One child process and what it is called in the logs."""

    name: str
    proc: subprocess.Popen[bytes]

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the bot closes, the worker finishes its batch), then SIGKILL."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
            self.proc.kill()
            return self.proc.wait()


def spawn(name: str, args: list[str], env: dict[str, str], log_path: Path | None = None) -> Child:
    out = None if log_path is None else log_path.open("ab")
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT if out is not None else None,
        stdin=subprocess.DEVNULL,
        # Its own process group: Ctrl-C in the terminal reaches the sandbox only, which
        # then stops the children in order (bot first, so no new jobs reach the worker).
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 (only prctl: safe after fork)
    )
    if out is not None:
        out.close()
    return Child(name, proc)


@dataclass
class RedisChoice:
    url: str
    description: str
    child: Child | None = None  # a private redis-server this sandbox started


def choose_redis(
    configured_url: str | None, data_dir: Path, *, local_port: int = 6379
) -> RedisChoice:
    """REDIS_URL if set; else a Redis answering on 127.0.0.1:`local_port`; else a private
    redis-server on a free port with its files under `data_dir`."""
    if configured_url:
        return RedisChoice(configured_url, "REDIS_URL")
    if redis_answers("127.0.0.1", local_port):
        return RedisChoice(
            f"redis://127.0.0.1:{local_port}/0", f"the Redis already on 127.0.0.1:{local_port}"
        )
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            f"No Redis: nothing answers on 127.0.0.1:{local_port} and redis-server is not "
            "installed.\n"
            "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
            "redis), or set REDIS_URL to a Redis you run."
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--save", "", "--appendonly", "no", "--logfile", "redis.log",
    ]  # fmt: skip
    child = spawn("redis", args, dict(os.environ))
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if not child.running() or time.monotonic() > deadline:
            child.stop()
            raise SystemExit(f"redis-server did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    return RedisChoice(
        f"redis://127.0.0.1:{port}/0",
        f"a private redis-server on 127.0.0.1:{port} (files in {data_dir})",
        child,
    )


def endpoint_ready(port: int) -> bool:
    """The program's /readyz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]
