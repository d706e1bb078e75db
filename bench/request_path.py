"""What one /detect request crosses, end to end through the real `python -m bot` and
`python -m inference.worker` (demo model) on the local Discord-compatible server:

    .venv/bin/python -m bench.request_path [--out FILE] [--idle-s SECONDS]

1. Project modules (files under bot/ and inference/) whose code ran, per process: bot,
   worker and the worker's spawned children. Each loads a `sitecustomize.py` (an extra
   PYTHONPATH folder): SIGUSR1 starts a profile hook (`sys.setprofile` in the main thread,
   asyncio's; `threading.setprofile` for new threads; around each thread-pool work item,
   so `asyncio.to_thread` and the worker's engine thread), SIGUSR2 removes it and writes
   what it saw as JSON. Outside the window no hook runs.
2. Lua scripts: EVALSHA calls on this run's key prefix seen by Redis MONITOR, named by the
   sha1 of `inference.queue.scripts.script_source(name)` computed inside each process (the
   text embeds the error codes of what that process imported); other commands counted.
3. Project classes of the argument values passed to project functions (`*args`/`**kwargs`
   contents included); dataclasses marked.

A /detect of another picture warms up first. The window runs from just before the measured
/detect until a second after its answer; an idle window of the same length follows, and
what ran there too (polling loops: take/beat/reap, results reading) is marked "idle too".
Not covered: non-pool threads started before the window (the metrics server's), and a
preparing process started during the window (a replacement).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from subprocess import Popen
from typing import Any

from redis.asyncio import Redis

from inference.queue import Keys
from sandbox.discord import DiscordServer
from tests.support.demo import DEMO_MODEL, ROOT
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_env,
    delete_prefix,
    one_shape_scene,
    png_bytes,
)

SETTLE_S = 1.0
TIMEOUT_S = 180.0
Record = dict[str, Any]

SITECUSTOMIZE = r"""
import os
_dir = os.environ.get("REQUEST_PATH_DIR")
if _dir:
    import concurrent.futures.thread as _cft
    import dataclasses, hashlib, json, signal, sys, threading
    _roots = tuple(os.path.join(r, p) + os.sep for p in ("bot", "inference")
                   for r in os.environ["REQUEST_PATH_ROOTS"].split(os.pathsep))
    _on, _files, _types, _file_ours, _type_ours = False, set(), set(), {}, {}
    def _hook(frame, event, arg):
        if event != "call" or not _on:
            return
        try:
            code = frame.f_code
            hit = _file_ours.get(code.co_filename)
            if hit is None:
                hit = _file_ours[code.co_filename] = code.co_filename.startswith(_roots)
            if not hit:
                return
            _files.add(code.co_filename)
            n = code.co_argcount + code.co_kwonlyargcount
            names = code.co_varnames[: n + bool(code.co_flags & 4) + bool(code.co_flags & 8)]
            loc = frame.f_locals if names else {}
            values = [loc.get(v) for v in names[:n]]
            for extra in names[n:]:  # *args, **kwargs: their contents
                more = loc.get(extra)
                values.extend(more.values() if isinstance(more, dict) else more or ())
            for v in values:
                t = type(v)
                ours = _type_ours.get(t)
                if ours is None:
                    module = str(getattr(t, "__module__", ""))
                    ours = _type_ours[t] = module.split(".")[0] in ("bot", "inference")
                if ours:
                    _types.add(t)
        except Exception:
            pass
    def _shas():
        m = sys.modules.get("inference.queue.scripts")
        if m is None or not hasattr(m, "script_source"):
            return {}
        lua = os.path.join(os.path.dirname(m.__file__), "lua")
        out = {}
        names = {f[:-4] for f in os.listdir(lua) if f.endswith(".lua")}
        for n in names | set(getattr(m, "_SCRIPT_NAMES", ())):
            try:
                out[hashlib.sha1(m.script_source(n).encode()).hexdigest()] = n
            except Exception:
                pass
        return out
    def _start(signum, frame):
        global _on
        _files.clear()
        _types.clear()
        _on = True
        threading.setprofile(_hook)
        sys.setprofile(_hook)
    def _dump(signum, frame):
        global _on
        _on = False
        sys.setprofile(None)
        threading.setprofile(None)
        mp = sys.modules.get("multiprocessing")
        record = {
            "pid": os.getpid(), "ppid": os.getppid(), "files": sorted(list(_files)),
            "role": os.environ.get("REQUEST_PATH_ROLE", ""), "shas": _shas(),
            "name": mp.current_process().name if mp else "",
            "types": [[t.__module__, t.__qualname__, dataclasses.is_dataclass(t)]
                      for t in list(_types)],
        }
        with open(os.path.join(_dir, "window")) as f:
            path = os.path.join(_dir, f.read().strip(), f"{os.getpid()}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
    _run = _cft._WorkItem.run
    def _run_profiled(self):
        if not _on:
            return _run(self)
        sys.setprofile(_hook)
        try:
            return _run(self)
        finally:
            sys.setprofile(None)
    _cft._WorkItem.run = _run_profiled
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _dump)
    open(os.path.join(_dir, f"{os.getpid()}.ready"), "w").close()
"""


class Recorder:
    """The processes' profile records and Redis MONITOR, one labelled window at a time."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.pids: list[int] = []
        self.commands: list[tuple[float, str]] = []
        self.began = 0.0
        self._monitor: asyncio.Task[None] | None = None

    async def _watch(self, started: asyncio.Event) -> None:
        client = Redis.from_url(REDIS_URL)
        try:
            async with client.monitor() as mon:
                started.set()
                while True:
                    try:
                        info = await mon.next_command()
                    except (AttributeError, ValueError):
                        continue  # a line redis-py cannot parse: not ours
                    if info["client_type"] != "lua" and self.prefix in info["command"]:
                        self.commands.append((info["time"], info["command"]))
        finally:
            await client.aclose()

    async def start(self, label: str) -> None:
        (self.folder / label).mkdir()
        self.commands, started = [], asyncio.Event()
        self._monitor = asyncio.create_task(self._watch(started))
        await asyncio.wait_for(started.wait(), 10)
        self.pids, self.began = [], time.time()
        for ready in self.folder.glob("*.ready"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(ready.stem), signal.SIGUSR1)
                self.pids.append(int(ready.stem))

    async def stop(self, label: str) -> tuple[list[Record], list[str]]:
        """The processes' records and the prefixed Redis commands of the window."""
        (self.folder / "window").write_text(label)
        ended = time.time()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)
        await asyncio.sleep(0.3)  # MONITOR lines still on their way
        assert self._monitor is not None
        self._monitor.cancel()
        await asyncio.gather(self._monitor, return_exceptions=True)
        files = [self.folder / label / f"{pid}.json" for pid in self.pids]
        deadline = time.monotonic() + 10
        while not all(f.exists() for f in files) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        records = [json.loads(f.read_text()) for f in files if f.exists()]
        if len(records) < len(files):
            print(f"warning: {len(files) - len(records)} process(es) wrote no record ({label})")
        return records, [c for at, c in self.commands if self.began <= at <= ended]


def scripts(commands: list[str], shas: dict[str, str]) -> tuple[Counter[str], Counter[str]]:
    """(Lua script calls by name, other prefixed commands by name)."""
    lua: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for command in commands:
        verb, sha, *_ = [*command.split(" ", 2), ""]
        if verb.upper() in ("EVALSHA", "EVALSHA_RO"):
            lua[shas.get(sha.lower(), "sha:" + sha[:12])] += 1
        else:
            other[verb.upper()] += 1
    return lua, other


def group(record: Record, mains: dict[int, str]) -> str:
    """ "bot", "worker", or e.g. "worker child palicord-prepare" (by process name)."""
    if record["pid"] in mains:
        return mains[record["pid"]]
    name = record["name"] if record["name"] not in ("", "MainProcess") else "helper"
    return f"{record['role']} child {name}"


def modules(records: list[Record], mains: dict[int, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    roots = tuple({str(ROOT) + os.sep, os.path.realpath(ROOT) + os.sep})
    for record in records:
        names = out.setdefault(group(record, mains), set())
        for file in record["files"]:
            path = next((file[len(r) :] for r in roots if file.startswith(r)), file)
            names.add(path.removesuffix(".py").replace(os.sep, ".").removesuffix(".__init__"))
    return out


async def until(check: Any, what: str, procs: dict[str, Popen[bytes]]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.2)


def start_processes(tmp: Path, server: DiscordServer, prefix: str) -> dict[str, Popen[bytes]]:
    """The worker and the bot, each with the sitecustomize hook; logs in `tmp`."""
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp / "records").mkdir()
    common = {
        "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}",
        "REQUEST_PATH_DIR": str(tmp / "records"),
        "REQUEST_PATH_ROOTS": os.pathsep.join({str(ROOT), os.path.realpath(ROOT)}),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "METRICS_PORT": "0",
        "OMP_NUM_THREADS": "2",
    }
    worker = {**os.environ, **common, "REQUEST_PATH_ROLE": "worker", "LINGER_S": "0"}
    worker["MODEL_ID"] = str(DEMO_MODEL)
    bot = {**common, "REQUEST_PATH_ROLE": "bot", "USER_COOLDOWN_S": "0"}
    bot["ATTACHMENT_HTTP_HOSTS"] = "127.0.0.1"
    procs: dict[str, Popen[bytes]] = {}
    for name, module, env in (
        ("worker", "inference.worker", worker),
        ("bot", "bot", bot_env(server, prefix, **bot)),
    ):
        with open(tmp / f"{name}.log", "wb") as log:
            command = [sys.executable, "-m", module]
            procs[name] = Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    return procs


async def measure(
    server: DiscordServer, redis: Redis, tmp: Path, procs: dict[str, Popen[bytes]], **kw: Any
) -> Record:
    """Warm up, then the request window and an idle window (kw: prefix, idle_s)."""
    workers = Keys(kw["prefix"]).workers

    async def workers_up() -> bool:
        return bool(await redis.zcount(workers, time.time(), "+inf"))

    async def detect_synced() -> bool:
        with contextlib.suppress(AssertionError):
            return bool(server.gateway.ready.is_set() and server.command("detect"))
        return False

    await until(detect_synced, "the bot synced /detect", procs)
    await until(workers_up, "the worker registered", procs)
    circles = [s for s in map(one_shape_scene, range(100)) if s.shapes[0].kind == "circle"]
    pictures = [
        server.attachment(png_bytes(s.image), f"circle{i}.png") for i, s in enumerate(circles[:2])
    ]

    async def detect(picture: Record, who: str) -> float:
        started = time.monotonic()
        state = await server.slash(
            "detect", user=server.user(who), attachments={"image": picture}, objects="circle"
        )
        await answer_for(server, state, timeout_s=TIMEOUT_S)
        return time.monotonic() - started

    print(f"warm-up /detect (another picture): {await detect(pictures[0], 'warm'):.2f} s")
    await asyncio.sleep(SETTLE_S)
    recorder = Recorder(tmp / "records", kw["prefix"])
    await recorder.start("request")
    started = time.monotonic()
    took = await detect(pictures[1], "measured")
    await asyncio.sleep(SETTLE_S)
    window_s = time.monotonic() - started
    request = await recorder.stop("request")
    idle_s = kw["idle_s"] or window_s
    await recorder.start("idle")
    await asyncio.sleep(idle_s)
    idle = await recorder.stop("idle")
    mains = {p.pid: name for name, p in procs.items()}
    got = {"answer_s": took, "window_s": window_s, "idle_s": idle_s, "mains": mains}
    return got | {"request": request, "idle": idle}


def report(got: Record, out: Path | None) -> None:
    (records, commands), (idle_records, idle_commands) = got["request"], got["idle"]
    mods, idle_mods = modules(records, got["mains"]), modules(idle_records, got["mains"])
    shas = {k: v for r in records + idle_records for k, v in r["shas"].items()}
    (lua, other), (idle_lua, idle_other) = scripts(commands, shas), scripts(idle_commands, shas)
    print(f"\n/detect answered in {got['answer_s']:.2f} s; window {got['window_s']:.2f} s", end="")
    print(f", idle window {got['idle_s']:.2f} s")
    result: Record = {k: got[k] for k in ("answer_s", "window_s", "idle_s")} | {"modules": {}}
    for name in sorted(mods):
        found, both = sorted(mods[name]), mods[name] & idle_mods.get(name, set())
        counts = dict(sorted(Counter(m.split(".")[0] for m in found).items()))
        pids = [r["pid"] for r in records if group(r, got["mains"]) == name]
        print(f"\n[{name}] pids {pids}: {len(found)} modules {counts}")
        for m in found:
            print(f"  {m}{'  (idle too)' if m in both else ''}")
        result["modules"][name] = {"request": found, "idle_too": sorted(both)}
    print(f"\nLua scripts: {sum(lua.values())} calls [the idle window's count in brackets]")
    for name, n in sorted(lua.items()):
        print(f"  {name:<24} {n:>4}   [{idle_lua.get(name, 0)}]")
    print("other prefixed Redis commands:", ", ".join(f"{k} {n}" for k, n in sorted(other.items())))
    types = {(m, q, dc) for r in records for m, q, dc in r["types"]}
    listed = sorted(f"{m}.{q}" for m, q, _ in types)
    dcs = sorted(f"{m}.{q}" for m, q, dc in types if dc)
    print(f"\nproject types of argument values: {len(listed)} ({len(dcs)} dataclasses)")
    for t in listed:
        print(f"  {t}{'  [dataclass]' if t in dcs else ''}")
    result |= {
        "lua": {"request": dict(lua), "idle": dict(idle_lua)},
        "other_commands": {"request": dict(other), "idle": dict(idle_other)},
        "types": listed,
        "dataclasses": dcs,
        "processes": [{k: r[k] for k in ("pid", "ppid", "role", "name")} for r in records],
    }
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")


async def main(out: Path | None, idle_s: float | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="request-path-"))
    prefix = "{request-path-" + uuid.uuid4().hex[:10] + "}:"
    server = DiscordServer()
    await server.start()
    redis = Redis.from_url(REDIS_URL)
    procs: dict[str, Popen[bytes]] = {}
    try:
        procs = start_processes(tmp, server, prefix)
        got = await measure(server, redis, tmp, procs, prefix=prefix, idle_s=idle_s)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()
        print(f"process logs in {tmp}")
    report(got, out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--idle-s", type=float, help="idle window (default: the request's)")
    args = parser.parse_args()
    asyncio.run(main(args.out, args.idle_s))
