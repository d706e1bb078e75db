"""Fair batched dispatch (lua/take.lua) and the scripts' protocol words, with a real Redis
and an in-process worker."""

from __future__ import annotations

import json
import random
import re
import time
from importlib import resources

from redis.asyncio import Redis

from inference.errors import (
    GuildOverCap,
    JobTimedOut,
    MalformedMessage,
    NoWorkerAlive,
    QueueFull,
    UnknownTask,
    UserOverCap,
    error_types,
)
from inference.queue import JobState, QueueClient, QueueSettings
from inference.queue.messages import Job
from inference.queue.scripts import (
    CancelOutcome,
    Scripts,
    Settlement,
    SubmitStatus,
    constants_prelude,
)
from inference.settings import WorkerSettings
from inference.tasks import Task, TaskSpec
from inference.worker import Worker
from inference.worker.testing import NoopEngine, SleepEngine
from tests.support.queue import RecordingWorker, aw, collect, submit
from tests.support.redis_server import own_redis_server


async def test_a_flooding_guild_delays_another_by_at_most_one_batch(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    for i in range(200):
        await submit(queue_client, guild="A", user=str(i % 3))
    lone = await submit(queue_client, guild="B")
    assert lone.place == 2
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    await worker.run_once()
    first = worker.batches_taken[0]
    assert len(first) == worker_settings.batch_size
    assert lone.job_id in first


async def test_round_robin_across_users_within_a_guild(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    heavy = [(await submit(queue_client, guild="A", user="1")).job_id for _ in range(10)]
    light = (await submit(queue_client, guild="A", user="2")).job_id
    worker = RecordingWorker(
        redis, worker_settings.model_copy(update={"batch_size": 2}), NoopEngine()
    )
    await worker.run_once()
    assert worker.batches_taken[0] == [heavy[0], light]
    await worker.run_once()
    assert worker.batches_taken[1] == heavy[1:3]  # FIFO per user


async def test_guild_weights(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    await aw(redis.hset(queue_client.keys.weights, "A", "2"))
    a = {(await submit(queue_client, guild="A", user=str(i))).job_id for i in range(10)}
    b = {(await submit(queue_client, guild="B", user=str(i))).job_id for i in range(10)}
    worker = RecordingWorker(
        redis, worker_settings.model_copy(update={"batch_size": 6}), NoopEngine()
    )
    await worker.run_once()
    batch = set(worker.batches_taken[0])
    assert len(batch & a) == 4 and len(batch & b) == 2


async def test_expired_job_is_answered_timed_out_without_running(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    job = Job.new(
        TaskSpec.build("caption"), guild_id=1, user_id=2, reply_to="bot-test", deadline_s=-1
    )
    await queue_client.submit(job, b"img")
    fresh = await submit(queue_client, guild="1", user="3")
    engine = SleepEngine()
    await RecordingWorker(redis, worker_settings, engine).run(burst=True)
    results = {d.result.job_id: d.result for d in await collect(queue_client, 2)}
    assert isinstance(results[job.job_id].exception(), JobTimedOut)
    assert results[fresh.job_id].ok
    assert engine.batches == [1]  # only the fresh job ran
    assert await queue_client.pending() == 0


async def test_jobs_a_worker_cannot_serve_wait_for_one_that_can(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ocr = await submit(queue_client, guild="A", user="1", task="ocr")
    caption = await submit(queue_client, guild="A", user="2")
    captioner = RecordingWorker(
        redis, worker_settings, SleepEngine(capabilities=frozenset({Task.CAPTION}))
    )
    await captioner.run_once()
    assert captioner.batches_taken == [[caption.job_id]]
    assert await captioner.run_once() == 0
    assert (await queue_client.status(ocr.job_id)).state == "queued"
    reader = RecordingWorker(redis, worker_settings, NoopEngine())
    await reader.run(burst=True)
    assert reader.batches_taken == [[ocr.job_id]]


async def test_an_unservable_job_still_times_out(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    job = Job.new(TaskSpec.build("ocr"), guild_id=1, user_id=2, reply_to="bot-test", deadline_s=-1)
    await queue_client.submit(job, b"img")
    captioner = RecordingWorker(
        redis, worker_settings, SleepEngine(capabilities=frozenset({Task.CAPTION}))
    )
    await captioner.run(burst=True)
    [delivery] = await collect(queue_client, 1)
    assert delivery.result.error == JobTimedOut.code


async def plant(redis: Redis, client: QueueClient, data: str, *, job_id: str = "") -> str:
    """Submit a valid job, then overwrite its message with `data`."""
    job_id = job_id or (await submit(client, user=str(time.monotonic_ns()))).job_id
    await aw(redis.hset(client.keys.job(job_id), "data", data))
    return job_id


async def test_malformed_payloads_are_dead_lettered_and_never_crash_the_worker(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    keys = queue_client.keys
    bad_json = await plant(redis, queue_client, "{not json")
    template = json.loads(
        queue_client.new_job(TaskSpec.build("caption"), guild_id=1, user_id=2).to_json()
    )
    wrong_version = await plant(redis, queue_client, json.dumps({**template, "v": 99}))
    missing = await plant(redis, queue_client, json.dumps({"v": 1, "job_id": "x"}))
    bad_task = await plant(redis, queue_client, json.dumps({**template, "task": "panoptic"}))
    # a bare id planted in a line, with no job behind it, is a stale entry: dropped
    await aw(redis.rpush(keys.user_queue("1", "10"), "ghost"))
    good = await submit(queue_client, user="99")

    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    assert await worker.run(burst=True) == 0

    results = {d.result.job_id: d.result for d in await collect(queue_client, 3)}
    # wrong_version still names where to reply; bad_json and missing do not
    assert isinstance(results[wrong_version].exception(), MalformedMessage)
    assert isinstance(results[bad_task].exception(), UnknownTask)
    assert results[good.job_id].ok
    dead = [json.loads(e) for e in await aw(redis.lrange(keys.dead_letter, 0, -1))]
    assert {d["job_id"] for d in dead} == {bad_json, wrong_version, missing}
    assert all(d["reason"] == "malformed" for d in dead)
    assert await queue_client.pending() == 0
    assert await redis.zcard(keys.leases) == 0
    assert await aw(redis.llen(keys.guild_ring)) == 0
    assert await aw(redis.hlen(keys.guild_queued)) == 0


async def test_many_users_a_worker_cannot_serve_do_not_hide_another_guilds_job(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # 40 users of guild A wait for OCR; a captioner with batch 1 may look at only 8 jobs
    # per take (taking.SCAN_PER_SLOT): looking past A's users must not use that up.
    for i in range(40):
        await submit(queue_client, guild="A", user=str(i), task="ocr")
    lone = await submit(queue_client, guild="B")
    captioner = RecordingWorker(
        redis,
        worker_settings.model_copy(update={"batch_size": 1}),
        SleepEngine(capabilities=frozenset({Task.CAPTION})),
    )
    assert await captioner.run_once() == 1
    assert captioner.batches_taken == [[lone.job_id]]


async def test_jobs_reaped_back_do_not_put_a_flooding_guild_ahead(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    for i in range(200):
        await submit(queue_client, guild="A", user=str(i % 3))
    scripts = Scripts(redis, queue_client.keys)
    dead = await scripts.take("dead-worker", 4, 0.0, Task, 32)  # a lease lapsed at once
    assert len(dead) == 4
    await scripts.begin("dead-worker", [j.job_id for j in dead])
    lone = await submit(queue_client, guild="B")
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    assert await worker.reap() == 4
    await worker.run_once()
    # One crash blames nobody: the reaped jobs run again in an ordinary fair batch, beside
    # the other guild's job (round robin between the guilds).
    [batch] = worker.batches_taken
    assert len(batch) == worker_settings.batch_size
    assert lone.job_id in batch
    assert len({j.job_id for j in dead} & set(batch)) == worker_settings.batch_size - 1


async def crash(scripts: Scripts, reaper: Worker, jobs: int, *, start: bool = True) -> list[str]:
    """A worker takes a batch of `jobs` (its lease lapsing at once), starts it unless told
    otherwise, and dies; `reaper` reaps. The ids taken."""
    taken = await scripts.take("doomed", jobs, 0.0, Task, 8 * jobs)
    ids = [j.job_id for j in taken]
    if start:
        assert await scripts.begin("doomed", ids) == len(ids)
    await reaper.reap()
    return ids


async def test_blame_a_second_crash_isolates_and_only_a_lone_crash_dead_letters(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ids = [(await submit(queue_client, user=str(i))).job_id for i in range(4)]
    scripts = Scripts(redis, queue_client.keys)
    reaper = Worker(redis, worker_settings, NoopEngine())
    assert worker_settings.max_attempts == 3
    # Two crashes of the whole batch: nobody is dead-lettered, everybody becomes a suspect.
    assert sorted(await crash(scripts, reaper, 4)) == sorted(ids)
    assert sorted(await crash(scripts, reaper, 4)) == sorted(ids)
    assert await aw(redis.llen(queue_client.keys.dead_letter)) == 0
    # Suspects come one per batch; the third crash, alone, is the first one charged.
    [first] = await crash(scripts, reaper, 4)
    [letter] = [json.loads(e) for e in await aw(redis.lrange(queue_client.keys.dead_letter, 0, -1))]
    assert letter["job_id"] == first
    # The others, alone and fine, are answered.
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    assert await worker.run(burst=True) == 0
    assert all(len(b) == 1 for b in worker.batches_taken)
    results = {d.result.job_id: d.result for d in await collect(queue_client, 4)}
    assert all(results[j].ok for j in ids if j != first)
    assert not results[first].ok


async def test_jobs_taken_ahead_and_never_started_are_not_suspects(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ids = [(await submit(queue_client, user=str(i))).job_id for i in range(4)]
    scripts = Scripts(redis, queue_client.keys)
    reaper = Worker(redis, worker_settings, NoopEngine())
    for _ in range(worker_settings.max_attempts + 2):  # far more than it takes to isolate
        await crash(scripts, reaper, 4, start=False)
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    assert await worker.run_once() == 4  # one batch, attempt 1: those takes did not count
    results = await collect(queue_client, 4)
    assert sorted(d.result.job_id for d in results) == sorted(ids)
    assert all(d.result.ok and d.result.attempt == 1 for d in results)
    assert await aw(redis.llen(queue_client.keys.dead_letter)) == 0


async def test_planted_job_fields_never_crash_the_worker(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    keys = queue_client.keys
    bad_attempt = (await submit(queue_client, user="1")).job_id
    await aw(redis.hset(keys.job(bad_attempt), mapping={"a": "x", "eq": "soon"}))
    nested = await plant(redis, queue_client, "[" * 100_000)
    await redis.set(keys.job("wrongtype"), "a string, not a hash")
    await aw(redis.rpush(keys.user_queue("1", "2"), "wrongtype"))
    await aw(redis.rpush(keys.guild_users("1"), "2"))
    good = await submit(queue_client, user="3")

    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    assert await worker.run(burst=True) == 0

    results = {d.result.job_id: d.result for d in await collect(queue_client, 2)}
    assert results[bad_attempt].ok and results[bad_attempt].attempt == 1
    assert results[good.job_id].ok
    dead = [json.loads(e) for e in await aw(redis.lrange(keys.dead_letter, 0, -1))]
    assert [d["job_id"] for d in dead] == [nested]
    assert await queue_client.pending() == 0
    assert await aw(redis.llen(keys.guild_ring)) == 0


def _lua_files() -> dict[str, str]:
    folder = resources.files("inference.queue").joinpath("lua")
    return {
        p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".lua")
    }


def test_the_lua_spells_no_protocol_word_of_its_own() -> None:
    # Error codes, states and statuses come from Python (the generated prelude), so the
    # two sides cannot drift apart.
    words = {cls.code for cls in error_types()}
    words |= {w.value for enum in (JobState, SubmitStatus, CancelOutcome) for w in enum}
    files = _lua_files()
    assert len(files) >= 9
    for name, text in files.items():
        code = re.sub(r"--[^\n]*", "", text)  # comments may name them
        literals = set(re.findall(r"'([^'\\]*)'", code)) | set(re.findall(r'"([^"\\]*)"', code))
        assert not literals & words, f"{name} spells {sorted(literals & words)}"


async def test_the_generated_words_are_pythons(redis: Redis) -> None:
    script = constants_prelude() + (
        "return {E.queue_full, E.guild_over_cap, E.user_over_cap, E.no_worker,"
        " State.queued, State.cancelled, Submit.ok, Submit.duplicate, Cancel.running}"
    )
    got = [w.decode() for w in await redis.eval(script, 0)]  # type: ignore[misc]
    assert got == [
        QueueFull.code,
        GuildOverCap.code,
        UserOverCap.code,
        NoWorkerAlive.code,
        JobState.QUEUED,
        JobState.CANCELLED,
        SubmitStatus.OK,
        SubmitStatus.DUPLICATE,
        CancelOutcome.RUNNING,
    ]


async def _commands_per_status(redis: Redis, client: QueueClient, job_id: str) -> int:
    """Redis commands one `status` runs (inside its script), from INFO commandstats."""
    await client.status(job_id)  # the script is loaded (SCRIPT LOAD) before counting
    await redis.config_resetstat()
    await client.status(job_id)
    stats = await redis.info("commandstats")
    skip = {"cmdstat_evalsha", "cmdstat_info", "cmdstat_config"}
    return sum(int(s["calls"]) for name, s in stats.items() if name not in skip)


async def test_a_place_lookup_costs_the_same_with_10_or_500_guilds_waiting(
    queue_settings: QueueSettings,
) -> None:
    # A private Redis: the shared one's command statistics count everybody's calls.
    with own_redis_server() as url:
        redis = Redis.from_url(url)
        settings = queue_settings.model_copy(update={"max_pending": 10_000})
        client = QueueClient(redis, settings, instance_id="bot-test", require_worker=False)
        probe = (await submit(client, guild="probe", user="p")).job_id
        counts = {}
        waiting = 0
        for guilds in (10, 500):
            for g in range(waiting, guilds):
                for u in range(2):
                    await submit(client, guild=f"g{g}", user=f"{g}-{u}")
            waiting = guilds
            counts[guilds] = await _commands_per_status(redis, client, probe)
        await redis.aclose()
    assert counts[10] == counts[500] < 20, counts


async def test_places_are_close_to_the_order_jobs_are_taken_in(
    redis: Redis, queue_client: QueueClient
) -> None:
    rnd = random.Random(3)
    ids = []
    for _ in range(150):
        g = str(rnd.randrange(15))
        ids.append((await submit(queue_client, guild=g, user=f"{g}-{rnd.randrange(3)}")).job_id)
    estimated = {j: await queue_client.status(j) for j in ids}
    scripts = Scripts(redis, queue_client.keys)
    order = []
    while taken := (await scripts.take("w", 1, 60.0, Task, 8)):
        order += [j.job_id for j in taken]
    assert sorted(order) == sorted(ids)
    for place, job_id in enumerate(order, start=1):
        status = estimated[job_id]
        assert abs(status.place - place) <= max(3, place // 10), (place, status)
        if status.exact:
            assert status.place == place


async def test_dead_letters_older_than_their_ttl_are_dropped(
    redis: Redis, queue_client: QueueClient
) -> None:
    scripts = Scripts(redis, queue_client.keys)
    dead = queue_client.keys.dead_letter
    await aw(redis.rpush(dead, json.dumps({"job_id": "old", "at": time.time() - 7200})))
    letter = json.dumps({"job_id": "new", "at": time.time()})
    settlement = Settlement("", None, 60, 60_000, dead_letter=letter, dead_letter_ttl_s=3600)
    assert await scripts.settle("new", settlement) == 1
    assert [json.loads(e)["job_id"] for e in await aw(redis.lrange(dead, 0, -1))] == ["new"]
    assert 0 < await redis.ttl(dead) <= 3600
