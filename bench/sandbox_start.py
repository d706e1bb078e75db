"""How long `make run` takes to the sandbox's first answer, and each process's peak memory.

    python -m bench.sandbox_start [--make]

Starts `scripts/run.sh` (with --make: `make run`, so a fresh clone's set-up is timed too)
without DISCORD_TOKEN, waits for the sandbox's address, asks /describe about the sample
picture through the scripting API, and prints: seconds to the address, seconds to the
first answer, and VmHWM (peak resident memory) of the sandbox, Redis (if it started one),
the worker and the bot, read from /proc just before Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from sandbox.client import SandboxClient

ROOT = Path(__file__).resolve().parent.parent


def _peak_kib(pid: int) -> tuple[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    name = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
    return name, int(re.search(r"VmHWM:\s+(\d+)", status)[1])  # type: ignore[index]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make", action="store_true", help="time `make run` (set-up too)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "MODEL_ID")}
    command = ["make", "run"] if args.make else ["scripts/run.sh"]
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    base = ""
    for line in proc.stdout:
        found = re.search(r"Sandbox: (http://\S+)/", line)
        if found:
            base = found[1]
            break
    up_s = time.monotonic() - started
    try:
        client = SandboxClient(base)
        with urllib.request.urlopen(base + "/samples/shapes.png") as reply:
            answer = client.run("describe", reply.read())
        assert answer is not None, "no answer"
        answer_s = time.monotonic() - started
        sandbox = proc.pid
        while args.make and not any("sandbox" in _peak_kib(c)[0] for c in [sandbox]):
            sandbox = _children(sandbox)[0]  # make → sh → python -m sandbox
        print(f"to 'Sandbox: {base}/': {up_s:.1f} s; to the first answer: {answer_s:.1f} s")
        for pid in [sandbox, *_children(sandbox)]:
            name, kib = _peak_kib(pid)
            print(f"  peak RSS {kib / 1024:7.1f} MiB  {name}")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        print(f"exit status after Ctrl-C: {proc.wait(60)}")


if __name__ == "__main__":
    main()
