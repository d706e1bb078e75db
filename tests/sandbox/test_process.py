"""`make run` as a process (its scripts/run.sh, what the Makefile target runs once the set-up
is done): without DISCORD_TOKEN, and with no Redis where it looks for one, it starts a
private redis-server, the worker with the demo model and the bot, serves the sandbox,
answers a request through the scripting API end to end, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sandbox.client import SandboxClient
from sandbox.stack import free_port, redis_answers
from tests.support.processes import ROOT

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

DEMO_MODEL = ROOT / "models" / "palicord-tiny"
START_TIMEOUT_S = 120


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):
        into.put(raw.decode(errors="replace"))


@pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the demo checkpoint is not built")
def test_make_run_serves_the_sandbox_answers_and_stops_cleanly() -> None:
    port, nothing_there = free_port(), free_port()
    env = {
        **os.environ,
        "SANDBOX_PORT": str(port),
        "LOCAL_REDIS_PORT": str(nothing_there),  # "no Redis running on this machine"
        "USER_COOLDOWN_S": "0",
    }
    for name in ("DISCORD_TOKEN", "REDIS_URL", "MODEL_ID"):
        env.pop(name, None)
    proc = subprocess.Popen(
        ["scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(f"Sandbox: http://127.0.0.1:{port}/" in line for line in output):
            assert proc.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        text = "".join(output)
        redis_port = int(re.search(r"private redis-server on 127\.0\.0\.1:(\d+)", text)[1])  # type: ignore[index]
        assert "Demo model" in text and redis_answers("127.0.0.1", redis_port)
        children = descendants(proc.pid)
        assert len(children) >= 3, children  # redis-server, the worker, the bot

        client = SandboxClient(f"http://127.0.0.1:{port}")
        state = client.state()
        assert state["bot"]["connected"] and "Demo model" in state["notice"]
        with urllib.request.urlopen(client.base + "/samples/shapes.png", timeout=10) as reply:
            sample = reply.read()
        answer = client.run("describe", sample)
        assert answer is not None, "no answer within 60 s"
        assert answer["embeds"][0].get("description"), answer
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        code = proc.wait(60)
    assert code == 0, "".join(output)
    # Grandchildren (the worker's preparing processes and multiprocessing's resource
    # tracker) see their parent's pipes close and exit a moment after it.
    deadline = time.monotonic() + 5
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if alive(pid)], "a process outlived `make run`"
    assert not redis_answers("127.0.0.1", redis_port)
