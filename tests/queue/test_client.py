"""The bot-side client against a real Redis: submit, caps, status, cancel, results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from inference.errors import (
    GuildOverCap,
    ImageTooLarge,
    JobTimedOut,
    NoWorkerAlive,
    QueueBusy,
    QueueFull,
    QueueUnavailable,
    UserOverCap,
)
from inference.queue import DM_GUILD, JobState, JobStatus, QueueClient, QueueSettings, connect
from inference.queue.memory import PICTURE, picture_digest
from inference.queue.messages import JobResult
from inference.queue.scripts import Scripts, Settlement
from inference.settings import WorkerSettings
from inference.tasks import Task, TaskSpec
from inference.worker import Worker
from inference.worker.testing import NoopEngine
from tests.support.discord_server.tcp_proxy import TcpProxy
from tests.support.queue import BOT_ID, RecordingWorker, aw, collect, submit
from tests.support.redis_server import own_redis_server


def capped(settings: QueueSettings, **caps: int) -> QueueSettings:
    return settings.model_copy(update=caps)


async def test_submit_returns_id_and_place(queue_client: QueueClient) -> None:
    places = [(await submit(queue_client, guild="A")).place for _ in range(3)]
    other = await submit(queue_client, guild="B")
    assert places == [1, 2, 3]
    assert other.place == 2  # round robin: right after A's first job
    assert await queue_client.pending() == 4


async def test_status_follows_the_job(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    first = await submit(queue_client, guild="A")
    second = await submit(queue_client, guild="A")
    assert (await queue_client.status(second.job_id)).place == 2
    worker = Worker(redis, worker_settings.model_copy(update={"batch_size": 1}), NoopEngine())
    await worker.run_once()
    assert (await queue_client.status(first.job_id)).state is JobState.DONE
    assert await queue_client.status(second.job_id) == JobStatus(
        JobState.QUEUED, 1, job_id=second.job_id
    )
    assert (await queue_client.status("nosuchjob")).state is JobState.UNKNOWN


async def test_global_guild_and_user_caps(redis: Redis, queue_settings: QueueSettings) -> None:
    settings = capped(
        queue_settings, max_pending=4, max_pending_per_guild=3, max_pending_per_user=2
    )
    client = QueueClient(redis, settings, instance_id=BOT_ID, require_worker=False)
    await submit(client, guild="A", user="1")
    await submit(client, guild="A", user="1")
    with pytest.raises(UserOverCap):
        await submit(client, guild="A", user="1")
    await submit(client, guild="A", user="2")
    with pytest.raises(GuildOverCap):
        await submit(client, guild="A", user="3")
    await submit(client, guild="B", user="2")
    with pytest.raises(QueueFull):
        await submit(client, guild="C", user="3")
    assert await client.pending() == 4


async def test_a_persons_cap_counts_every_server_and_dm(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    settings = capped(queue_settings, max_pending_per_user=3)
    client = QueueClient(redis, settings, instance_id=BOT_ID, require_worker=False)
    for guild in ("A", "B", "C"):
        await submit(client, guild=guild, user="1")
    for guild in ("A", "D", DM_GUILD):  # a throwaway server buys no more turns
        with pytest.raises(UserOverCap, match=r"3 requests waiting .* every server and DM"):
            await submit(client, guild=guild, user="1")
    await submit(client, guild="A", user="2")
    one_at_a_time = worker_settings.model_copy(update={"batch_size": 1})
    await Worker(redis, one_at_a_time, NoopEngine()).run_once()
    await submit(client, guild=DM_GUILD, user="1")  # one answered: room for one more
    assert await aw(redis.hgetall(client.keys.user_pending)) == {b"1": b"3", b"2": b"1"}


async def test_two_peoples_dms_do_not_share_a_line(
    redis: Redis, queue_settings: QueueSettings
) -> None:
    client = QueueClient(
        redis, capped(queue_settings, max_pending_per_guild=2, max_pending_per_user=5),
        instance_id=BOT_ID, require_worker=False,
    )  # fmt: skip
    for _ in range(2):
        await submit(client, guild=DM_GUILD, user="0")
    with pytest.raises(GuildOverCap, match="You already have 2 requests waiting"):
        await submit(client, guild=DM_GUILD, user="0")
    # A stranger's full DMs do not block this person, who waits for a turn of their own
    # in the round robin, as a server would.
    second = await submit(client, guild=DM_GUILD, user="1")
    assert second.place == 2
    ring = await aw(redis.lrange(client.keys.guild_ring, 0, -1))
    assert ring == [b"dm-0", b"dm-1"]


async def test_caps_free_up_when_jobs_finish(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    client = QueueClient(
        redis, capped(queue_settings, max_pending_per_user=1), instance_id=BOT_ID,
        require_worker=False,
    )  # fmt: skip
    await submit(client)
    with pytest.raises(UserOverCap):
        await submit(client)
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    await submit(client)


async def test_no_worker_alive_refuses_until_a_heartbeat(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    client = QueueClient(redis, queue_settings, instance_id=BOT_ID, require_worker=True)
    with pytest.raises(NoWorkerAlive):
        await submit(client)
    assert await client.workers() == []
    worker = Worker(redis, worker_settings, NoopEngine(), worker_id="w-alive")
    await worker.presence.announce()
    await submit(client)
    [info] = await client.workers()
    assert info.worker_id == "w-alive" and info.model_id == "noop"
    assert "caption" in info.capabilities


async def test_image_size_cap(redis: Redis, queue_settings: QueueSettings) -> None:
    client = QueueClient(
        redis, capped(queue_settings, max_image_bytes=10), instance_id=BOT_ID, require_worker=False
    )
    job = client.new_job(TaskSpec.build("ocr"), guild_id=1, user_id=2)
    with pytest.raises(ImageTooLarge):
        await client.submit(job, b"x" * 11)
    await client.submit(job, b"x" * 10)


async def test_a_picture_is_kept_once_and_pinned_while_its_jobs_need_it(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    keys, picture = queue_client.keys, b"image-bytes"  # what `submit` queues
    digest = picture_digest(picture)
    jobs = [(await submit(queue_client, user=str(u))).job_id for u in range(2)]
    kept = keys.stash(PICTURE, digest)
    # One copy in Redis for both jobs (and for follow-ups), none per job.
    assert await redis.get(kept) == picture
    assert not await redis.exists(*(keys.image(j) for j in jobs))
    assert await aw(redis.hgetall(keys.picture_pins)) == {digest.encode(): b"2"}
    ttl = await redis.ttl(kept)
    assert queue_client._settings.image_ttl_s - 5 <= ttl  # lives at least as long as a job
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    await collect(queue_client, 2)
    assert not await redis.exists(*(keys.job(j) for j in jobs))
    assert await aw(redis.hget(keys.picture_pins, digest)) is None  # no job needs it now
    assert await redis.get(kept) == picture  # still there for follow-ups


async def test_cancel_queued_job(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    cancelled = await submit(queue_client)
    kept = await submit(queue_client)
    assert await queue_client.cancel(cancelled.job_id)
    assert (await queue_client.status(cancelled.job_id)).state is JobState.CANCELLED
    assert (await queue_client.status(kept.job_id)).place == 1
    assert await queue_client.pending() == 1
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    await worker.run(burst=True)
    assert worker.batches_taken == [[kept.job_id]]
    assert not await queue_client.cancel(cancelled.job_id)  # already decided


async def test_cancel_running_job_drops_its_result(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    job_id = (await submit(queue_client)).job_id
    scripts = Scripts(redis, queue_client.keys)
    taken = await scripts.take("w1", 4, 30.0, [Task.CAPTION], 32)
    assert [j.job_id for j in taken] == [job_id]
    assert (await queue_client.status(job_id)).state is JobState.RUNNING
    assert await queue_client.cancel(job_id)
    published = await scripts.settle(
        job_id, Settlement(result_json="{}", reply_to=BOT_ID, done_ttl_s=60, retention_ms=60_000)
    )
    assert published == 0
    assert await redis.xlen(queue_client.keys.results(BOT_ID)) == 0
    assert await redis.zcard(queue_client.keys.leases) == 0
    assert await queue_client.pending() == 0


async def test_publish_is_idempotent(redis: Redis, queue_client: QueueClient) -> None:
    job_id = (await submit(queue_client)).job_id
    scripts = Scripts(redis, queue_client.keys)
    await scripts.take("w1", 1, 30.0, [Task.CAPTION], 8)
    result = JobResult(job_id=job_id, context={}, text="hi").to_json()
    outcomes = [
        await scripts.settle(
            job_id,
            Settlement(result_json=result, reply_to=BOT_ID, done_ttl_s=60, retention_ms=60_000),
        )
        for _ in range(3)
    ]
    assert outcomes == [1, 0, 0]
    assert await redis.xlen(queue_client.keys.results(BOT_ID)) == 1
    assert await queue_client.pending() == 0


async def test_restarted_consumer_gets_results_produced_while_away(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    first = QueueClient(redis, queue_settings, instance_id=BOT_ID, require_worker=False)
    ids = {(await submit(first, user=str(i))).job_id for i in range(4)}
    worker = Worker(redis, worker_settings, NoopEngine())
    await worker.run(burst=True)
    handled: set[str] = set()
    reader = first.results(block_ms=100)
    for _ in range(2):
        delivery = await anext(reader)
        handled.add(delivery.result.job_id)
        await first.ack(delivery)
    unacked = await anext(reader)  # read, then the bot "crashes" before acknowledging it
    await reader.aclose()

    ids |= {(await submit(first, user=str(i))).job_id for i in range(4, 7)}
    await worker.run(burst=True)  # results produced while no bot is reading

    second = QueueClient(redis, queue_settings, instance_id=BOT_ID, require_worker=False)
    rest = await collect(second, len(ids) - len(handled))
    assert rest[0].result.job_id == unacked.result.job_id  # pending first
    got = [d.result.job_id for d in rest]
    assert len(got) == len(set(got))
    assert handled | set(got) == ids
    assert await redis.xlen(first.keys.results(BOT_ID)) == 0  # acked entries are deleted


async def test_malformed_result_entries_are_dropped(
    redis: Redis, queue_client: QueueClient
) -> None:
    stream = queue_client.keys.results(BOT_ID)
    await redis.xadd(stream, {"r": "not json"})
    await redis.xadd(stream, {"r": JobResult(job_id="j1", context={}, text="ok").to_json()})
    [delivery] = await collect(queue_client, 1)
    assert delivery.result.job_id == "j1"
    assert await redis.xlen(stream) == 0


async def test_a_job_cancelled_then_handed_back_leaves_nothing_behind(
    redis: Redis, queue_client: QueueClient
) -> None:
    job_id = (await submit(queue_client)).job_id
    scripts = Scripts(redis, queue_client.keys)
    await scripts.take("w1", 1, 30.0, Task, 8)
    assert await queue_client.cancel(job_id)
    assert await scripts.release("w1", [job_id]) == 0  # SIGTERM before it started
    keys = queue_client.keys
    assert not await redis.exists(keys.job(job_id), keys.image(job_id))
    assert await redis.zcard(keys.leases) == 0
    assert (await queue_client.status(job_id)).state is JobState.CANCELLED


@pytest.mark.slow
async def test_a_hung_redis_fails_commands_within_the_timeout(
    queue_settings: QueueSettings,
) -> None:
    # Redis that accepts connections but never answers (a stalled proxy in front of it).
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        settings = queue_settings.model_copy(
            update={
                "redis_url": SecretStr(f"redis://127.0.0.1:{proxy.port}/0"),
                "redis_timeout_s": 0.5,
            }
        )
        async with connect(settings) as redis:
            client = QueueClient(redis, settings, instance_id=BOT_ID, require_worker=False)
            await submit(client)
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(QueueUnavailable):
                await submit(client)
            assert time.monotonic() - started < 3.0
            # An idle results stream blocks for less than the timeout: not an outage.
            proxy.resume()
            reader = client.results()
            read = asyncio.ensure_future(anext(reader))
            await asyncio.sleep(1.0)
            assert not read.done(), "an idle read must keep waiting, not fail"
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read
            await reader.aclose()


async def test_pictures_over_the_byte_budget_are_refused_as_busy(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    client = QueueClient(
        redis, capped(queue_settings, max_queued_bytes=250_000), instance_id=BOT_ID,
        require_worker=False,
    )  # fmt: skip
    spec = TaskSpec.build("caption")
    picture = b"p" * 100_000
    for user in ("1", "2"):
        await client.submit(client.new_job(spec, guild_id="1", user_id=user), picture)
    with pytest.raises(QueueBusy, match="try again in a moment"):
        await client.submit(client.new_job(spec, guild_id="1", user_id="3"), picture)
    assert int(await aw(redis.get(client.keys.queued_bytes))) == 200_000
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    assert await aw(redis.get(client.keys.queued_bytes)) is None  # given back
    await client.submit(client.new_job(spec, guild_id="1", user_id="3"), picture)


async def test_a_full_redis_refuses_new_pictures_as_busy_and_still_drains(
    queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    # A private Redis with a small maxmemory and noeviction, as deploy/redis.conf sets it.
    # The picture store keeps at most its budget once no job needs its pictures: it is
    # set well under maxmemory, as deploy/redis.conf and the default budget have it.
    with own_redis_server("--maxmemory", "8mb", "--maxmemory-policy", "noeviction") as url:
        redis = Redis.from_url(url)
        roomy = capped(
            queue_settings,
            max_pending_per_user=1000,
            max_pending_per_guild=1000,
            picture_store_max_bytes=1024 * 1024,
            max_image_bytes=1024 * 1024,
        )
        client = QueueClient(redis, roomy, instance_id=BOT_ID, require_worker=False)
        hurried = QueueClient(
            redis, roomy.model_copy(update={"job_deadline_s": 0.001}), instance_id=BOT_ID,
            require_worker=False,
        )  # fmt: skip
        spec = TaskSpec.build("caption")
        expiring = await hurried.submit(
            hurried.new_job(spec, guild_id="1", user_id="x"), os.urandom(300_000)
        )
        ids = []
        with pytest.raises(QueueBusy):
            for i in range(100):  # different pictures: the same one is kept only once
                job = client.new_job(spec, guild_id="1", user_id=str(i))
                ids.append((await client.submit(job, os.urandom(300_000))).job_id)
        assert len(ids) >= 3
        # Redis refuses new writes now; cancelling, taking, expiring and settling still work.
        assert await client.cancel(ids[0])
        await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
        results = {d.result.job_id: d.result for d in await collect(client, len(ids))}
        assert set(results) == {expiring.job_id, *ids[1:]}
        assert isinstance(results[expiring.job_id].exception(), JobTimedOut)
        assert all(results[j].ok for j in ids[1:])
        assert await client.pending() == 0
        again = client.new_job(spec, guild_id="1", user_id="again")
        await client.submit(again, os.urandom(300_000))
        await redis.aclose()
