"""Hostile inputs through the real bot and worker on the demo model, before and after the
hardening of issue 19, side by side in one run.

    .venv/bin/python -m bench.hostile [--bomb-scans 1000] [--skip-bomb]

Decode bomb: a 6000×6000 progressive JPEG whose last scan repeats `--bomb-scans` times
(0.6 MB) is sent to `/describe` from one server, and one second later an ordinary picture
from another. "Before" emulates the previous code: no structural cap in the bot or the
worker (`MAX_JPEG_SCANS` lifted in both processes) and preparation without a time budget
(`PREPARE_PROCESSES=0`, DECODE_TIMEOUT_S off). "After" is the default configuration. Both
print the seconds from each request to its final reply (the bomb's answer or error, the
neighbour's answer). A second row sends a bomb kept under the scan cap (63 scans, which
only the decode budget can stop) with a budget of 1 s.

Bot memory: the bot's peak resident-set increase for a 40-megapixel (7900×5000) `/detect`,
each measured in a fresh child process (`tests/support/bot_memory.py`): before, the upload decoded
in full and drawn; after, drawn on the worker's display copy.

`<image>` in a question: a batch of 8 on the demo engine with `<image>` typed in one
question, counting the model's generate calls: the user's text tokenised as plain text
(after) and, for the same batch, that row tokenised as before (the typed `<image>` a real
image token, so its batch fails and the worker's halving isolates it).

The bot runs in this process against the local Discord-compatible server of the tests;
the worker is `python -m inference.worker`, a separate process. Not a CI test: it takes a
few minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from redis.asyncio import Redis
from tokenizers import Tokenizer

from inference import structure
from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.inputs import ModelInput
from inference.queue import QueueClient
from inference.tasks import InferenceRequest, TaskSpec
from inference.worker.runner import generate_resilient
from sandbox.discord import DiscordServer
from sandbox.discord.interactions import InteractionState
from sandbox.discord.recorder import Recorded
from tests.support.bot_memory import detect_peak_increase_mb
from tests.support.demo import ROOT, demo_engine, demo_worker_env
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    delete_prefix,
    one_shape_scene,
    png_bytes,
    running_bot,
    unique_prefix,
    worker_settings,
)
from tests.support.hostile import progressive_jpeg, repeated_scans

REPLY_TIMEOUT_S = 600.0
# The previous code, for the worker: the scan cap lifted in the process that prepares.
UNCAPPED_WORKER = (
    "import runpy, inference.structure as s; s.MAX_JPEG_SCANS = 10**9; "
    "runpy.run_module('inference.worker', run_name='__main__')"
)


@dataclass(frozen=True)
class Mode:
    name: str
    uncapped: bool
    env: dict[str, str]


def start_worker(prefix: str, mode: Mode) -> subprocess.Popen[bytes]:
    env = demo_worker_env(prefix, **mode.env)
    tail = ["--log-level", "ERROR"]
    if mode.uncapped:
        return subprocess.Popen([sys.executable, "-c", UNCAPPED_WORKER, *tail], env=env, cwd=ROOT)
    return subprocess.Popen([sys.executable, "-m", "inference.worker", *tail], env=env, cwd=ROOT)


async def final_reply(server: DiscordServer, state: InteractionState) -> Recorded:
    """The interaction's answer (an edit with embeds) or its error (an ephemeral post)."""
    [rec] = await server.recorder.wait_for(
        lambda r: (
            r.params.get("token") == state.token
            and (
                (r.method == "PATCH" and bool(r.payload.get("embeds")))
                or (r.method == "POST" and r.ephemeral)
            )
        ),
        timeout_s=REPLY_TIMEOUT_S,
    )
    return rec


async def bomb_and_neighbour(mode: Mode, bomb: bytes) -> tuple[float, float, str]:
    """Seconds to the bomb's final reply, the neighbour's, and what the bomb's sender saw."""
    server = DiscordServer(guild_count=2)
    await server.start()
    prefix = unique_prefix()
    redis = Redis.from_url(REDIS_URL)
    worker = start_worker(prefix, mode)
    saved_cap = structure.MAX_JPEG_SCANS
    if mode.uncapped:
        structure.MAX_JPEG_SCANS = 10**9  # the bot's probe, in this process
    try:
        probe = QueueClient(redis, worker_settings(prefix), instance_id="probe")
        async with asyncio.timeout(120):
            while not await probe.workers():  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.1)
        hostile, quiet = server.guilds
        settings = bot_settings(server, prefix, max_image_bytes=20 * 2**20)
        async with running_bot(settings):
            bad = server.attachment(bomb, "bomb.jpg", "image/jpeg")
            good = server.attachment(png_bytes(one_shape_scene(seed=8).image), "ok.png")
            sent_bomb = time.monotonic()
            bomb_state = await server.slash(
                "describe", user=server.user("mallory"), guild=hostile, attachments={"image": bad}
            )
            await asyncio.sleep(1.0)
            sent_good = time.monotonic()
            good_state = await server.slash(
                "describe", user=server.user("alice"), guild=quiet, attachments={"image": good}
            )
            bomb_reply, good_reply = await asyncio.gather(
                final_reply(server, bomb_state), final_reply(server, good_state)
            )
        embeds = bomb_reply.payload.get("embeds") or [{}]
        seen = bomb_reply.content or "embed: " + str(embeds[0].get("description"))
        return bomb_reply.at - sent_bomb, good_reply.at - sent_good, seen
    finally:
        structure.MAX_JPEG_SCANS = saved_cap
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


def bot_memory() -> None:
    print(f"{'40 MP /detect, bot peak increase':<40} {'before MB':>10} {'after MB':>10}")
    full = detect_peak_increase_mb(7900, 5000, how="full")
    display = detect_peak_increase_mb(7900, 5000, how="display")
    print(f"{'7900x5000 PNG':<40} {full:>10.0f} {display:>10.0f}")


def generate_calls() -> None:
    engine = demo_engine()
    rng = random.Random(19)
    scenes = [shapes.make_scene(rng, size=(160, 120)) for _ in range(8)]
    questions = [f"what color is the {s.shapes[0].kind}?" for s in scenes]
    questions[3] = "what is <image> this?"
    requests = [
        InferenceRequest(TaskSpec.build("answer", question=q), encode_png(s.image))
        for q, s in zip(questions, scenes, strict=True)
    ]
    prepared = engine.prepare(requests)
    # The tokenisation before issue 19: the whole prompt in one piece, added tokens live
    # (the engine's own spec; private attributes, as this is a benchmark of its insides).
    spec = engine._pool.local.spec
    old = Tokenizer.from_str(spec.tokenizer_json)
    ids = old.encode(
        spec.prefix + requests[3].spec.prompt() + "\n", add_special_tokens=spec.add_special_tokens
    ).ids
    row = prepared[3].prepared
    assert isinstance(row, ModelInput)
    as_before = list(prepared)
    as_before[3] = dataclasses.replace(
        prepared[3], prepared=dataclasses.replace(row, input_ids=torch.tensor(ids))
    )
    print(f"{'batch of 8, <image> typed in one row':<40} {'generate calls':>14} {'answered':>9}")
    for label, batch in (
        ("as before (a real image token)", as_before),
        ("as text (now)", prepared),
    ):
        start = engine.generate_calls
        results = generate_resilient(engine, batch)
        answered = sum(1 for r in results if r is not None and r.ok)
        print(f"{label:<40} {engine.generate_calls - start:>14} {answered:>7}/8")


async def run(bomb_scans: int) -> None:
    big = progressive_jpeg((6000, 6000))
    bomb = repeated_scans(big, bomb_scans)
    under_cap = repeated_scans(big, structure.MAX_JPEG_SCANS - 10)
    before = Mode("before (no cap, no budget)", True, {"PREPARE_PROCESSES": "0"})
    after = Mode("after (defaults)", False, {})
    budget = Mode("after, DECODE_TIMEOUT_S=1", False, {"DECODE_TIMEOUT_S": "1"})
    rows = [
        (f"{bomb_scans + 10:,}-scan bomb, {len(bomb) / 1e6:.2f} MB", before, bomb),
        (f"{bomb_scans + 10:,}-scan bomb, {len(bomb) / 1e6:.2f} MB", after, bomb),
        (f"63-scan bomb, {len(under_cap) / 1e6:.2f} MB", before, under_cap),
        (f"63-scan bomb, {len(under_cap) / 1e6:.2f} MB", budget, under_cap),
    ]
    print(f"{'input':<28} {'mode':<28} {'bomb reply s':>12} {'neighbour s':>12}  bomb's sender saw")
    for label, mode, data in rows:
        bomb_s, good_s, seen = await bomb_and_neighbour(mode, data)
        print(f"{label:<28} {mode.name:<28} {bomb_s:>12.1f} {good_s:>12.1f}  {seen[:70]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-scans", type=int, default=1000)
    parser.add_argument("--skip-bomb", action="store_true", help="only memory and calls")
    args = parser.parse_args()
    if not args.skip_bomb:
        asyncio.run(run(args.bomb_scans))
        print()
    bot_memory()
    print()
    generate_calls()


if __name__ == "__main__":
    main()
