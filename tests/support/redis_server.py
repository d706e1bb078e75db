"""A private `redis-server` on a free loopback port, for the tests and benchmarks that must
change its configuration (a small `maxmemory`) or read its command statistics, which the
shared Redis on 6379 cannot give: other tests and people use it at the same time."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis as SyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from sandbox.stack import free_port

START_TIMEOUT_S = 10.0


@contextmanager
def own_redis_server(*config: str) -> Iterator[str]:
    """Start `redis-server` with extra `--option value` arguments; yields its URL, and
    stops it (and its files) afterwards."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="palicord-redis-") as folder:
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", folder, *config]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_until_up(url, proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    client = SyncRedis.from_url(url)
    try:
        while True:
            try:
                if client.ping():
                    return
            except RedisConnectionError as exc:  # still starting
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {exc}") from exc
            time.sleep(0.05)
    finally:
        client.close()
