"""Chaos run: hundreds of requests through the real bot while workers, the bot and Redis
are killed, and one table that counts every request.

    .venv/bin/python -m bench.chaos [--requests 300] [--duration-s 150] [--kill-every-s 6]

Starts its own Redis (AOF on, `appendfsync always`, a free port, data in a temporary
folder), the local Discord-compatible server of the tests, `python -m bot` and two
`python -m inference.worker` on the demo model, all as separate processes but the
server. Users in three guilds send /describe, /ask, /detect and /ocr at a steady rate;
every `--kill-every-s` a random worker is SIGKILLed and started again a second later; the
bot is SIGKILLed and restarted once (at a third of the run) and Redis once (at two thirds).

The table: requests sent, not acknowledged (sent while the bot was down: Discord shows
"the application did not respond", nothing was queued), answered, errors by message,
lost (acknowledged and never answered: must be 0), answered twice (must be 0), time to
answer (p50/p99), and for each worker kill the time until every job it held was running
again on another worker (or answered). Not a CI test: minutes long, machine-dependent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from inference.demo.shapes import make_scene
from inference.queue import Keys
from sandbox.discord import DiscordServer, InteractionState
from tests.support.discord_server.expect import is_answer
from tests.support.discord_server.harness import png_bytes

ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = ROOT / "models" / "palicord-tiny"
PREFIX = "{chaos}:"
WORKERS = 2
USERS_PER_GUILD = 12
DRAIN_S = 120.0  # after the last request, how long answers may still take
LOGS = ROOT / "out" / "chaos"  # each program's log, kept for reading after the run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Processes:
    """The programs under test, each restartable by name."""

    redis_port: int
    redis_dir: str
    server: DiscordServer
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    generation: Counter[str] = field(default_factory=Counter)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url,
            "KEY_PREFIX": PREFIX,
            "OMP_NUM_THREADS": "1",
            "METRICS_PORT": "0",
        }

    def start_redis(self) -> None:
        args = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        args += ["--dir", self.redis_dir, "--appendonly", "yes", "--appendfsync", "always"]
        args += ["--save", "", "--maxmemory-policy", "noeviction", "--loglevel", "warning"]
        args += ["--logfile", str(LOGS / "redis.log")]
        self.procs["redis"] = subprocess.Popen(args)

    def start_bot(self) -> None:
        env = {
            **self._env(),
            "DISCORD_TOKEN": self.server.token,
            "DISCORD_API_BASE": self.server.api_base,
            "DISCORD_GATEWAY_URL": self.server.gateway_url,
            "ATTACHMENT_HTTP_HOSTS": "127.0.0.1",
            "INSTANCE_ID": "chaos-bot",
            "USER_COOLDOWN_S": "0",
            "GUILD_DAILY_QUOTA": "100000",
            "MAX_PENDING_PER_GUILD": "1000",
        }
        self.procs["bot"] = self._spawn([sys.executable, "-m", "bot"], env, "bot")

    def start_worker(self, slot: int) -> str:
        name = f"worker{slot}"
        self.generation[name] += 1
        worker_id = f"chaos-{slot}-{self.generation[name]}"
        env = {**self._env(), "WORKER_ID": worker_id, "MODEL_ID": str(DEMO_MODEL)}
        args = [sys.executable, "-m", "inference.worker"]
        self.procs[name] = self._spawn(args, env, name)
        return worker_id

    def _spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with open(LOGS / f"{name}.log", "ab") as log:
            return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=log)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class Sent:
    state: InteractionState | None  # None: the bot was down, nothing reached it
    sent_at: float


@dataclass
class Run:
    procs: Processes
    redis: Redis
    keys: Keys = field(default_factory=lambda: Keys(PREFIX))
    sent: list[Sent] = field(default_factory=list)
    worker_ids: dict[int, str] = field(default_factory=dict)
    recoveries_s: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f} s  {text}")
        print(self.events[-1], flush=True)

    async def held_by(self, worker_id: str) -> list[str]:
        try:
            owners = await self.redis.hgetall(self.keys.lease_owner)  # type: ignore[misc]
        except Exception:
            return []
        return [j.decode() for j, w in owners.items() if w.decode() == worker_id]

    async def watch_recovery(self, dead_id: str, jobs: list[str], killed_at: float) -> None:
        """Time until every job the dead worker held is leased by another, or answered."""
        pending = set(jobs)
        while pending and time.monotonic() - killed_at < 120:
            for job in list(pending):
                try:
                    owner = await self.redis.hget(self.keys.lease_owner, job)  # type: ignore[misc]
                    done = await self.redis.exists(self.keys.done(job))
                except Exception:
                    break  # Redis is being killed: try again
                if done or (owner is not None and owner.decode() != dead_id):
                    pending.discard(job)
            await asyncio.sleep(0.05)
        if not pending:
            self.recoveries_s.append(time.monotonic() - killed_at)

    async def kill_workers(self, every_s: float, until: float) -> None:
        watchers = []
        while time.monotonic() + every_s < until:
            await asyncio.sleep(every_s * random.uniform(0.7, 1.3))
            slot = random.randrange(WORKERS)
            dead_id = self.worker_ids[slot]
            # Kill it while it holds work, when it does within a few seconds: that is when
            # a crash costs something.
            jobs: list[str] = []
            for _ in range(60):
                jobs = await self.held_by(dead_id)
                if jobs:
                    break
                await asyncio.sleep(0.05)
            self.procs.kill(f"worker{slot}")
            killed_at = time.monotonic()
            self.note(f"SIGKILL worker {dead_id} holding {len(jobs)} jobs")
            if jobs:
                watchers.append(asyncio.create_task(self.watch_recovery(dead_id, jobs, killed_at)))
            await asyncio.sleep(1.0)
            self.worker_ids[slot] = self.procs.start_worker(slot)
        await asyncio.gather(*watchers)

    async def kill_bot_then_redis(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s / 3)
        self.procs.kill("bot")
        self.note("SIGKILL bot")
        await asyncio.sleep(2.0)
        self.procs.start_bot()
        self.note("bot restarted")
        await asyncio.sleep(duration_s / 3)
        self.procs.kill("redis")
        self.note("SIGKILL redis")
        await asyncio.sleep(2.0)
        self.procs.start_redis()
        self.note("redis restarted (AOF)")

    async def send(
        self, count: int, duration_s: float, images: list[tuple[dict[str, object], str]]
    ) -> None:
        server = self.procs.server
        users = {
            g.id: [server.user(f"u{g.id % 1000}-{i}") for i in range(USERS_PER_GUILD)]
            for g in server.guilds
        }
        for _ in range(count):
            guild = random.choice(server.guilds)
            user = random.choice(users[guild.id])
            image, kind = random.choice(images)
            choices: list[tuple[str, dict[str, Any]]] = [
                ("describe", {}),
                ("ask", {"question": "what color is the shape?"}),
                ("detect", {"objects": kind}),
                ("ocr", {}),
            ]
            command, options = random.choice(choices)
            state = None
            if server.gateway.ready.is_set():
                try:
                    state = await server.slash(
                        command, user=user, guild=guild, attachments={"image": image}, **options
                    )
                except RuntimeError:  # the bot went away between the check and the send
                    state = None
            self.sent.append(Sent(state, time.monotonic()))
            await asyncio.sleep(duration_s / count)


def outcome(server: DiscordServer, sent: Sent) -> tuple[str, float | None, int]:
    """(kind, seconds to the final word, number of final answers)."""
    state = sent.state
    if state is None:
        return "not acknowledged (bot down)", None, 0
    # Webhook edits and follow-ups, and the interaction callback (an ephemeral refusal).
    records = server.recorder.matching(lambda r: r.params.get("token") == state.token)
    answers = [r for r in records if r.method == "PATCH" and is_answer(r)]
    errors = [r for r in records if r.method == "POST" and r.ephemeral]
    finals = sorted(answers + errors, key=lambda r: r.at)
    if not state.acknowledged and not finals:
        return "not acknowledged (bot down)", None, 0
    if not finals:
        return "LOST", None, 0
    first = finals[0]
    took = first.at - state.dispatched_at
    if first in errors:
        return "error: " + first.text.removeprefix("⚠️ ")[:60], took, len(finals)
    colour = (first.payload.get("embeds") or [{}])[0].get("color")
    if colour == 0xE74C3C:  # discord.Colour.red(): a job that ended in an error
        return "error answer: " + first.embed_text.removeprefix("⚠️ ")[:50], took, len(finals)
    return "answered", took, len(finals)


def report(run: Run, duration_s: float) -> None:
    server = run.procs.server
    kinds: Counter[str] = Counter()
    times: list[float] = []
    twice = 0
    for sent in run.sent:
        kind, took, finals = outcome(server, sent)
        kinds[kind] += 1
        twice += finals > 1
        if took is not None and kind == "answered":
            times.append(took)
    times.sort()
    print()
    print(f"| {'chaos run':<72} | {'':>8} |")
    print(f"|{'-' * 74}|{'-' * 10}|")
    rows: list[tuple[str, str]] = [("requests sent", str(len(run.sent)))]
    rows += [(kind, str(n)) for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])]
    rows.append(("lost (acknowledged, never answered)", str(kinds.get("LOST", 0))))
    rows.append(("answered twice", str(twice)))
    if times:
        rows.append(("time to answer p50", f"{statistics.median(times):.1f} s"))
        p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
        rows.append(("time to answer p99", f"{p99:.1f} s"))
    kills = [e for e in run.events if "SIGKILL worker" in e]
    rows.append(("worker kills", str(len(kills))))
    if run.recoveries_s:
        rec = sorted(run.recoveries_s)
        rows.append(("kill -> its jobs running again, median", f"{statistics.median(rec):.1f} s"))
        rows.append(("kill -> its jobs running again, max", f"{rec[-1]:.1f} s"))
    rows.append(("run length", f"{duration_s:.0f} s of requests"))
    for name, value in rows:
        print(f"| {name:<72} | {value:>8} |")
    for sent in run.sent:
        if outcome(server, sent)[0] == "LOST":
            at = sent.sent_at - run.started
            print(f"lost: sent at {at:.1f} s, {sent.state.token if sent.state else ''}")
    print(f"logs in {LOGS}")


async def main(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    redis_dir = tempfile.mkdtemp(prefix="palicord-chaos-")
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    server = DiscordServer(guild_count=3)
    await server.start()
    procs = Processes(free_port(), redis_dir, server)
    procs.start_redis()
    redis = Redis.from_url(procs.redis_url)
    run = Run(procs, redis)
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    await redis.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        procs.start_bot()
        for slot in range(WORKERS):
            run.worker_ids[slot] = procs.start_worker(slot)
        async with asyncio.timeout(120):
            await server.gateway.ready.wait()
            while await redis.zcount(run.keys.workers, time.time(), "+inf") < WORKERS:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        run.note("bot and workers up")
        images = []
        for seed in range(8):
            scene = make_scene(random.Random(seed), size=(160, 160), min_shapes=1, max_shapes=1)
            att = server.attachment(png_bytes(scene.image), f"shape{seed}.png")
            images.append((att, scene.shapes[0].kind))
        until = time.monotonic() + args.duration_s
        await asyncio.gather(
            run.send(args.requests, args.duration_s, images),
            run.kill_workers(args.kill_every_s, until),
            run.kill_bot_then_redis(args.duration_s),
        )
        run.note("all requests sent; waiting for the last answers")
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            if not any(outcome(server, s)[0] == "LOST" for s in run.sent):
                break
            await asyncio.sleep(1.0)
        report(run, args.duration_s)
    finally:
        procs.stop_all()
        await redis.aclose()
        await server.close()
        shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--duration-s", type=float, default=150.0)
    parser.add_argument("--kill-every-s", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=11)
    asyncio.run(main(parser.parse_args()))
