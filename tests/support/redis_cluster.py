"""A real three-master Redis Cluster on loopback ports, for the cluster tests.

Started the way an operator would (`redis-server --cluster-enabled yes` per node, then
`redis-cli --cluster create`), with its node files in a temporary folder; stopped and
removed afterwards. Nothing else uses its ports, so tests on it may touch any key.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sandbox.stack import port_free

MASTERS = 3
# Each node also listens on its port + 10000 (the cluster bus).
BUS_OFFSET = 10_000
START_TIMEOUT_S = 20.0


def _free_ports(count: int) -> list[int]:
    """Ports free together with their cluster-bus ports."""
    out: list[int] = []
    for port in range(21_000, 25_000):
        if len(out) == count:
            break
        if port_free(port) and port_free(port + BUS_OFFSET):
            out.append(port)
    if len(out) < count:
        raise RuntimeError("no free loopback ports for a Redis Cluster")
    return out


def _cli(port: int, *args: str) -> str:
    reply = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    return reply.stdout


def _pongs(port: int) -> bool:
    return _cli(port, "ping").strip() == "PONG"


def _serves_all_slots(port: int) -> bool:
    return "cluster_state:ok" in _cli(port, "cluster", "info")


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"Redis Cluster: {what} in {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def redis_cluster(folder: Path) -> Iterator[str]:
    """Run a three-master cluster; yields a start-up node's URL."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli are needed (apt-get install redis-server)")
    ports = _free_ports(MASTERS)
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            home = folder / str(port)
            home.mkdir(parents=True)
            nodes.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--save", "", "--appendonly", "no", "--dir", str(home)],
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in ports:
            _wait(functools.partial(_pongs, port), "a node did not start")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for port in ports:
            _wait(functools.partial(_serves_all_slots, port), "the slots were not all served")
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
