"""Automatic alt text on the demo model, through the real bot and the local
Discord-compatible server: how long a picture waits for its description, and what a burst
of alt-text pictures does to a /describe sent during it, with and without the background
queue class, side by side in one run.

    .venv/bin/python -m bench.alt_text [--posts 10] [--repeats 10] [--burst 50] [--quick]

The bot runs in this process (as `python -m bot` builds it) against the local server of
the tests, with MESSAGE_CONTENT_INTENT on and every `art*` channel chosen with
`/settings alt_text_channels`; the worker is `python -m inference.worker` on
`models/palicord-tiny` (OMP_NUM_THREADS=2, default batch size), a separate process. Every
picture is a different demo scene, so the shared answer cache never answers one.

1. Post to description: `--posts` messages with one picture and no alt text, one after
   another in an alt-text channel; the seconds from the post to the bot's reply (one
   message, AI label first). Median and p90.
2. /describe during a burst: first `--posts` /describe requests on an idle queue (the
   baseline). Then, for each layout (the burst spread over 25 channels, 2 pictures each,
   and all in 1 channel) and each mode, `--repeats` times: `--burst` messages of one
   picture each, from as many different people, posted at once; when the bot has queued
   all of them, a /describe from someone else, timed from the interaction to its answer;
   then the burst is left to drain (every reply posted) before the next one. Modes
   alternate within each repeat, so drift on a shared machine hits both alike.
   - background (the code as it is): the cog submits alt text with
     `submit(background=True)`, served only in batch slots interactive jobs leave.
   - interactive (without the class): this script wraps the bot's
     `QueueClient.submit` (`SubmitSwitch` below) so that jobs whose id starts with `alt-`
     (the cog's) go in with `background=False`: ordinary jobs of the poster, in the
     server's line, round robin with everyone else's. Nothing else changes.
   Medians per cell, the ratio to the idle baseline and interactive over background.

Caps that would hide the effect are lifted and printed: ALT_TEXT_PER_CHANNEL_PER_HOUR
10,000 (the default 60 would also cap a 50-picture burst in one channel only after the
first burst or two, but every burst here must be whole), GUILD_DAILY_QUOTA 1,000,000 (all
alt text counts against it). Each picture of a burst has its own poster, so the per-user
cap (MAX_PENDING_PER_USER, 5) does not refuse the interactive ones either. Not a CI test:
about a minute and a half on the shared 2-core VM; `--quick` rehearses in about 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.queue import JobStatus, QueueClient
from inference.queue.messages import Job
from sandbox.discord import DiscordServer
from sandbox.discord.payloads import FakeChannel, Json
from sandbox.discord.recorder import Recorded
from tests.support.demo import DEMO_MODEL, ROOT, demo_worker_env
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    delete_prefix,
    one_shape_scene,
    png_bytes,
    running_bot,
    worker_settings,
)

REPLY = "POST /channels/{channel_id}/messages"
TIMEOUT_S = 300.0
CAP_PER_CHANNEL_PER_HOUR = 10_000
GUILD_QUOTA = 1_000_000
SPREAD_CHANNELS = 25


class SubmitSwitch:
    """The bot's `QueueClient.submit`, wrapped: counts the alt-text jobs queued (ids
    `alt-…`, from `bot.cogs.alt_text`) and, with `background` False, queues them as
    ordinary interactive jobs instead of background ones."""

    def __init__(self, queue: QueueClient) -> None:
        self._submit = queue.submit
        self.background = True
        self.alt_queued = 0
        queue.submit = self.submit  # type: ignore[method-assign]

    async def submit(
        self, job: Job, image: bytes | None = None, *, background: bool = False
    ) -> JobStatus:
        alt = job.job_id.startswith("alt-")
        if alt:
            background = background and self.background
        submitted = await self._submit(job, image, background=background)
        if alt:
            self.alt_queued += 1
        return submitted


@dataclass
class Cell:
    describe_s: list[float] = field(default_factory=list)
    pending_at_send: list[int] = field(default_factory=list)
    drain_s: list[float] = field(default_factory=list)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def start_worker(prefix: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "inference.worker", "--log-level", "ERROR"]
    return subprocess.Popen(command, env=demo_worker_env(prefix), cwd=ROOT)


class Bench:
    def __init__(self, server: DiscordServer, bot: PalicordBot, switch: SubmitSwitch) -> None:
        self.server, self.bot, self.switch = server, bot, switch
        self.seeds = itertools.count(1000)

    def picture(self, name: str) -> Json:
        data = png_bytes(one_shape_scene(seed=next(self.seeds)).image)
        return self.server.attachment(data, f"{name}.png")

    def replies_to(self, messages: list[Json]) -> Callable[[Recorded], bool]:
        ids = {m["id"] for m in messages}

        def match(r: Recorded) -> bool:
            ref = r.payload.get("message_reference") or {}
            return r.key == REPLY and str(ref.get("message_id")) in ids

        return match

    async def post_to_reply(self, channel: FakeChannel) -> float:
        since = self.server.recorder.next_seq()
        started = time.monotonic()
        posted = await self.server.post_message(
            self.server.user("poster"), attachments=[self.picture("post")], channel=channel
        )
        [reply] = await self.server.recorder.wait_for(
            self.replies_to([posted]), since=since, timeout_s=TIMEOUT_S
        )
        assert reply.content.startswith("**AI description:**"), reply.content
        return reply.at - started

    async def describe(self) -> float:
        image = self.picture("ask")
        started = time.monotonic()
        state = await self.server.slash(
            "describe", user=self.server.user("asker"), attachments={"image": image}
        )
        answer = await answer_for(self.server, state, timeout_s=TIMEOUT_S)
        return answer.at - started

    async def burst(self, channels: list[FakeChannel], size: int, cell: Cell) -> None:
        """`size` one-picture posts at once, spread over `channels`; a /describe once the
        bot has queued them all; then wait for every description."""
        since = self.server.recorder.next_seq()
        queued_before = self.switch.alt_queued
        started = time.monotonic()
        posts = await asyncio.gather(
            *(
                self.server.post_message(
                    self.server.user(f"p{i}"),
                    attachments=[self.picture(f"b{i}")],
                    channel=channels[i % len(channels)],
                )
                for i in range(size)
            )
        )
        async with asyncio.timeout(TIMEOUT_S):
            while self.switch.alt_queued - queued_before < size:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        cell.pending_at_send.append(await self.bot.queue.pending())
        cell.describe_s.append(await self.describe())
        replies = await self.server.recorder.wait_for(
            self.replies_to(posts), since=since, count=size, timeout_s=TIMEOUT_S
        )
        cell.drain_s.append(max(r.at for r in replies) - started)


async def main(posts: int, repeats: int, size: int) -> None:
    channels = ("art", *(f"art{i}" for i in range(SPREAD_CHANNELS)), "flood")
    server = DiscordServer(guild_count=1, extra_channels=channels)
    await server.start()
    prefix = "{bench-alt-" + uuid.uuid4().hex[:8] + "}:"
    redis = Redis.from_url(REDIS_URL)
    worker = start_worker(prefix)
    try:
        probe = QueueClient(redis, worker_settings(prefix), instance_id="probe")
        async with asyncio.timeout(120):
            while not await probe.workers():  # noqa: ASYNC110 (another process)
                await asyncio.sleep(0.1)
        settings = bot_settings(
            server,
            prefix,
            message_content_intent=True,
            alt_text_per_channel_per_hour=CAP_PER_CHANNEL_PER_HOUR,
            guild_daily_quota=GUILD_QUOTA,
        )
        async with running_bot(settings) as bot:
            guild = server.guild
            named = {c: guild.channel_named(c) for c in channels}
            mentions = " ".join(f"<#{c.id}>" for c in named.values())
            admin = server.user("boss", admin=True)
            state = await server.slash("settings", user=admin, alt_text_channels=mentions)
            shown = await server.wait_for_callback(state)
            assert "Not active" not in shown.text, shown.text
            bench = Bench(server, bot, SubmitSwitch(bot.queue))
            await bench.post_to_reply(named["art"])  # warm-up (and the opt-out notice)
            await bench.describe()
            print(
                f"demo model {DEMO_MODEL.name}, worker OMP_NUM_THREADS=2 batch "
                f"{worker_settings(prefix).batch_size}, ALT_TEXT_PER_CHANNEL_PER_HOUR="
                f"{CAP_PER_CHANNEL_PER_HOUR:,}, GUILD_DAILY_QUOTA={GUILD_QUOTA:,}"
            )

            waits = [await bench.post_to_reply(named["art"]) for _ in range(posts)]
            print(
                f"post -> description reply, {posts} sequential posts: median "
                f"{statistics.median(waits) * 1000:.0f} ms, p90 {p90(waits) * 1000:.0f} ms"
            )

            idle = [await bench.describe() for _ in range(posts)]
            layouts = {
                f"{SPREAD_CHANNELS} channels": [named[f"art{i}"] for i in range(SPREAD_CHANNELS)],
                "1 channel": [named["flood"]],
            }
            cells = {(lay, bg): Cell() for lay in layouts for bg in (True, False)}
            for r in range(repeats):
                for lay, where in layouts.items():
                    for bg in (True, False) if r % 2 == 0 else (False, True):
                        bench.switch.background = bg
                        await bench.burst(where, size, cells[lay, bg])
            bench.switch.background = True
            print_table(idle, cells, list(layouts), size, repeats)
    finally:
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


def print_table(
    idle: list[float], cells: dict[tuple[str, bool], Cell], layouts: list[str], size: int, n: int
) -> None:
    base = statistics.median(idle)
    print(f"/describe, time to answer (median; idle: {len(idle)} requests, burst: {n} each)")
    print(
        f"{'queue during the /describe':<30} {'background':>11} {'interactive':>12} "
        f"{'int./bg':>8}   {'queued at send bg/int':>21} {'burst drained bg/int':>21}"
    )
    print(f"{'idle':<30} {base * 1000:>8.0f} ms {base * 1000:>9.0f} ms {1:>7.2f}x")
    for lay in layouts:
        bg, it = cells[lay, True], cells[lay, False]
        b, i = statistics.median(bg.describe_s), statistics.median(it.describe_s)
        queued = f"{statistics.median(bg.pending_at_send):.0f} / "
        queued += f"{statistics.median(it.pending_at_send):.0f}"
        drained = f"{statistics.median(bg.drain_s):.1f} / {statistics.median(it.drain_s):.1f} s"
        print(
            f"{f'burst of {size}, {lay}':<30} {b * 1000:>8.0f} ms {i * 1000:>9.0f} ms "
            f"{i / b:>7.2f}x   {queued:>21} {drained:>21}"
        )
        print(
            f"{'  vs idle':<30} {b / base:>10.2f}x {i / base:>11.2f}x   "
            f"added: {(b - base) * 1000:.0f} ms bg, {(i - base) * 1000:.0f} ms interactive"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=10, help="sequential posts and idle asks")
    parser.add_argument("--repeats", type=int, default=10, help="bursts per layout and mode")
    parser.add_argument("--burst", type=int, default=50, help="pictures per burst")
    parser.add_argument("--quick", action="store_true", help="3 posts, 1 repeat: a rehearsal")
    args = parser.parse_args()
    if args.quick:
        args.posts, args.repeats = 3, 1
    asyncio.run(main(args.posts, args.repeats, args.burst))
