"""The bot's peak-memory increase for a 40-megapixel /detect, before and after issue 19.

    python -m bench.bot_memory [--width 7900] [--height 5000]

Each figure comes from a fresh child process that plays the bot's side of one answer
(`tests.support.bot_memory`): "before" decodes the upload in full and draws on it, as the bot did
until issue 19; "after" draws on the display copy the worker now sends with the result;
"older worker" is a result without a copy (the bot reads the upload only where that takes
bounded memory). The worker's side is timed too: its decode with and without the copy.
Other scripts call `tests.support.bot_memory.detect_peak_increase_mb` directly.

    python -m bench.bot_memory --through-discord [--bot-root DIR]

measures the real thing instead: `python -m bot` (from DIR: a checkout of another version,
e.g. `git archive main | tar -x -C DIR`) against the local Discord-compatible server, an
in-process worker running the shapes oracle, one small /detect to warm up, then the big
one; it prints the bot process's resident set before and its peak during the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from inference.display import load_with_display
from inference.intake import load_image
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer
from sandbox.stack import free_port
from tests.support.bot_memory import MODEL_SIDE, ROOT, big_upload, detect_result, measure
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_env,
    delete_prefix,
    one_shape_scene,
    png_bytes,
    running_worker,
    unique_prefix,
    worker_settings,
)
from tests.support.processes import until_ready


def _best_s(call: Callable[[], object], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main(width: int, height: int) -> None:
    upload, detection = big_upload(width, height)
    print(f"a {width} x {height} RGBA PNG ({width * height / 1e6:.1f} MP, {len(upload):,} bytes)")
    print(f"{'path':<14} {'peak increase':>14} {'compose':>9} {'picture sent':>14}")
    for label, how in (("before", "full"), ("after", "display"), ("older worker", "fallback")):
        result = detect_result(upload, detection, with_display=how == "display")
        m = measure(upload, result, how)
        sent = f"{m.pictures[0]:,} B" if m.pictures else "none (text)"
        print(f"{label:<14} {m.increase_mb:>11.0f} MB {m.seconds:>8.2f}s {sent:>14}")
    alone = _best_s(lambda: load_image(upload, target_size=MODEL_SIDE))
    both = _best_s(lambda: load_with_display(upload, target_size=MODEL_SIDE))
    print(f"worker decode: {alone:.2f}s for the model alone, {both:.2f}s with the display copy")


def _status_kb(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise ValueError(f"no {name} in /proc/{pid}/status")


def _restart_peak(pid: int) -> None:
    # Linux: the high-water mark (VmHWM) starts again from what is resident now.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def through_discord(width: int, height: int, bot_root: Path) -> None:
    """The bot process's memory for one big /detect, through the fake Discord."""
    server = DiscordServer()
    await server.start()
    prefix, port = unique_prefix(), free_port()
    env = bot_env(
        server,
        prefix,
        PYTHONPATH=str(bot_root),
        METRICS_PORT=str(port),
        ATTACHMENT_HTTP_HOSTS="127.0.0.1",
        USER_COOLDOWN_S="0",
    )
    command = [sys.executable, "-m", "bot"]
    proc = await asyncio.to_thread(subprocess.Popen, command, env=env, cwd=bot_root)
    try:
        async with running_worker(worker_settings(prefix), ShapesOracle()):
            await until_ready(f"http://127.0.0.1:{port}", timeout_s=60)
            small = one_shape_scene(seed=1, size=(300, 200))
            for name, data, objects, user in (
                ("warm.png", png_bytes(small.image), small.shapes[0].kind, "warm"),
                ("big.png", big_upload(width, height)[0], "square", "big"),
            ):
                if name == "big.png":
                    before_kb = _status_kb(proc.pid, "VmRSS")
                    _restart_peak(proc.pid)
                attachment = server.attachment(data, name)
                state = await server.slash(
                    "detect", user=server.user(user), attachments={"image": attachment},
                    objects=objects,
                )  # fmt: skip
                started = time.perf_counter()
                answer = await answer_for(server, state, timeout_s=120)
            seconds = time.perf_counter() - started
            peak_kb = _status_kb(proc.pid, "VmHWM")
        sizes = [f"{f.filename} {len(f.data):,} B" for f in answer.files]
        print(f"bot from {bot_root}: {width} x {height} /detect answered in {seconds:.1f}s")
        rise_mb = (peak_kb - before_kb) / 1000
        print(f"  resident before {before_kb / 1000:.0f} MB, peak {peak_kb / 1000:.0f} MB")
        print(f"  increase {rise_mb:.0f} MB; sent {', '.join(sizes)}")
    finally:
        proc.terminate()
        proc.wait(20)
        redis = Redis.from_url(REDIS_URL)
        async with redis:
            await delete_prefix(redis, prefix)
        await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=7900)
    parser.add_argument("--height", type=int, default=5000)
    parser.add_argument("--through-discord", action="store_true")
    parser.add_argument("--bot-root", type=Path, default=ROOT)
    args = parser.parse_args()
    if args.through_discord:
        asyncio.run(through_discord(args.width, args.height, args.bot_root.resolve()))
    else:
        main(args.width, args.height)
