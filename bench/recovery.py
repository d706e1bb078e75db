"""A worker crash through the real bot, with the demo model: how long until the dead
worker's jobs run again, and whether the quiet guild still comes first.

    .venv/bin/python -m bench.recovery [--flood 24] [--restart-delay-s 0] [--batch-time-s 1.5]

The scenario of issue 11: guild A floods `--flood` /describe requests (one user each),
guild B asks once, and the worker (`python -m inference.worker` on the demo model, a
separate process) is SIGKILLed while B's job is in its running batch, then started again
after `--restart-delay-s`; with `--batch-time-s`, each of the worker's batches takes at
least that long (the demo model padded with sleep: a GPU's batch cost). The bot runs in
this process against the local Discord-compatible server of the tests, on the Redis at
127.0.0.1:6379 (its own key prefix). Prints one table: seconds from the kill until the
dead batch's jobs run again, B's place among all answers, seconds from the restart (and
from the new worker's first heartbeat: loading the model takes long on a busy machine) to
the last answer, and answers per request (each must be exactly 1). Not a CI test: it
takes a minute and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from inference.queue import JobState, Keys, QueueClient
from sandbox.discord import DiscordServer
from tests.support.demo import ROOT, demo_worker_env
from tests.support.discord_server.expect import answer_for
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

ANSWER_TIMEOUT_S = 180.0


def start_worker(prefix: str, worker_id: str, batch_time_s: float) -> subprocess.Popen[bytes]:
    env = demo_worker_env(prefix, WORKER_ID=worker_id, BATCH_SIZE="8")
    args = [sys.executable, "-m", "inference.worker", "--log-level", "WARNING"]
    if batch_time_s > 0:
        args += ["--engine", "inference.worker.testing:slowed_engine"]
        args += ["--engine-option", f"batch_s={batch_time_s}"]
    return subprocess.Popen(args, env=env, cwd=ROOT)


async def leased_by(redis: Redis, keys: Keys, guild_id: int) -> dict[str, str]:
    """Job id -> worker id of the leased jobs of one guild."""
    owners = await redis.hgetall(keys.lease_owner)  # type: ignore[misc]
    out: dict[str, str] = {}
    for jid, worker in owners.items():
        guild = await redis.hget(keys.job(jid.decode()), "g")  # type: ignore[misc]
        if guild is not None and int(guild) == guild_id:
            out[jid.decode()] = worker.decode()
    return out


async def poll(condition: Callable[[], Awaitable[object]], timeout_s: float) -> None:
    """Wait until `condition()` is truthy: other processes make it so."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def run(flood: int, restart_delay_s: float, batch_time_s: float) -> None:
    server = DiscordServer(guild_count=2)
    await server.start()
    prefix = unique_prefix()
    keys = Keys(prefix)
    redis = Redis.from_url(REDIS_URL)
    first = start_worker(prefix, "w1", batch_time_s)
    second: subprocess.Popen[bytes] | None = None
    try:
        probe = QueueClient(redis, worker_settings(prefix), instance_id="probe")
        await poll(probe.workers, 120)
        busy, quiet = server.guilds
        image = server.attachment(png_bytes(one_shape_scene(seed=61).image), "s.png")
        async with running_bot(bot_settings(server, prefix, max_pending_per_guild=1000)):
            states = [
                await server.slash(
                    "describe", user=server.user(f"f{i}"), guild=busy, attachments={"image": image}
                )
                for i in range(flood)
            ]
            lone = await server.slash(
                "describe", user=server.user("quiet"), guild=quiet, attachments={"image": image}
            )

            async def quiet_running_on_w1() -> bool:
                return "w1" in (await leased_by(redis, keys, quiet.id)).values()

            await poll(quiet_running_on_w1, 60)
            [quiet_job] = await leased_by(redis, keys, quiet.id)
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            await asyncio.sleep(restart_delay_s)
            second = start_worker(prefix, "w2", batch_time_s)
            restarted_at = time.monotonic()

            async def w2_alive() -> bool:
                return any(w.worker_id == "w2" for w in await probe.workers())

            await poll(w2_alive, 120)
            alive_at = time.monotonic()

            async def running_again() -> bool:
                owner = await redis.hget(keys.lease_owner, quiet_job)
                state = (await probe.status(quiet_job)).state
                return owner == b"w2" or state is JobState.DONE

            await poll(running_again, 120)
            running_again_s = time.monotonic() - killed_at
            answers = [
                await answer_for(server, s, timeout_s=ANSWER_TIMEOUT_S) for s in [*states, lone]
            ]
            last_answer_s = max(a.at for a in answers) - restarted_at
            alive_to_last_s = max(a.at for a in answers) - alive_at
            order = sorted(range(len(answers)), key=lambda i: answers[i].at)
            quiet_rank = order.index(len(answers) - 1) + 1
            per_request = {
                len([r for r in server.sent_for(s) if r.method == "PATCH" and r.embed_text])
                for s in [*states, lone]
            }
        rows = {
            "requests": f"{flood + 1}",
            "kill -> the dead batch runs again": f"{running_again_s:.1f} s",
            "quiet guild's answer, place among all": f"{quiet_rank} of {len(answers)}",
            "restart -> last answer": f"{last_answer_s:.1f} s",
            "new worker's heartbeat -> last answer": f"{alive_to_last_s:.1f} s",
            "answers per request": f"{sorted(per_request)}",
        }
        for label, value in rows.items():
            print(f"{label:<42} {value}")
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        await delete_prefix(redis, prefix)
        await redis.aclose()
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=24)
    parser.add_argument("--restart-delay-s", type=float, default=0.0)
    parser.add_argument("--batch-time-s", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(run(args.flood, args.restart_delay_s, args.batch_time_s))


if __name__ == "__main__":
    main()
