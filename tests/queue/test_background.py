"""Background work in the queue (automatic alt text): a ring of its own, taken only in
batch slots interactive jobs leave, kept out of interactive places and caps."""

from __future__ import annotations

from redis.asyncio import Redis

from inference.errors import QueueFull
from inference.queue import JobState, JobStatus, QueueClient, QueueSettings
from inference.queue.keys import background_unit
from inference.settings import WorkerSettings
from inference.tasks import TaskSpec
from inference.worker.testing import NoopEngine
from tests.support.queue import BOT_ID, RecordingWorker, aw, collect, submit


async def background(
    client: QueueClient, guild: str = "1", channel: str = "500", user: str = "10"
) -> JobStatus:
    spec = TaskSpec.build("describe")
    job = client.new_job(spec, guild_id=guild, user_id=user, channel_id=channel)
    return await client.submit(job, b"image-bytes", background=True)


async def test_interactive_jobs_go_first_and_background_fills_the_rest(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    alt = [(await background(queue_client, channel=str(500 + i % 3))).job_id for i in range(10)]
    asked = [(await submit(queue_client, guild="1", user=str(i))).job_id for i in range(2)]
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    await worker.run_once()
    first = worker.batches_taken[0]
    assert len(first) == worker_settings.batch_size  # idle slots filled with alt text
    assert set(asked) <= set(first)
    assert len(set(first) & set(alt)) == 2
    # Round robin across the guild's alt-text channels: two different channels served.
    await worker.run_once()
    assert worker.batches_taken[1][:3] != alt[:3] or len(set(alt) - set(first)) == 8
    results = await collect(queue_client, 8)
    assert {d.result.job_id for d in results} == set(first) | set(worker.batches_taken[1])


async def test_interactive_places_do_not_count_background_jobs(
    queue_client: QueueClient,
) -> None:
    for i in range(20):
        await background(queue_client, guild=str(i % 4 + 1), channel=str(600 + i))
    lone = await submit(queue_client, guild="9", user="1")
    assert (lone.place, lone.exact) == (1, True)
    assert (await queue_client.status(lone.job_id)).place == 1
    second = await submit(queue_client, guild="8", user="2")
    assert second.place == 2


async def test_background_never_counts_against_the_poster_or_the_guilds_own_cap(
    redis: Redis, redis_prefix: str
) -> None:
    settings = QueueSettings(
        key_prefix=redis_prefix, max_pending=100, max_pending_per_guild=3, max_pending_per_user=1
    )
    client = QueueClient(redis, settings, instance_id=BOT_ID, require_worker=False)
    for _ in range(3):  # the poster (user 10) has a cap of 1: alt text is not theirs
        await background(client, guild="1", user="10")
    await submit(client, guild="1", user="10")  # their own request still fits
    keys = client.keys
    pending = await aw(redis.hgetall(keys.guild_pending))
    assert pending == {background_unit("1").encode(): b"3", b"1": b"1"}


async def test_background_fills_at_most_half_of_the_queue(redis: Redis, redis_prefix: str) -> None:
    settings = QueueSettings(
        key_prefix=redis_prefix,
        max_pending=10,
        max_pending_per_guild=100,
        max_pending_per_user=100,
    )
    client = QueueClient(redis, settings, instance_id=BOT_ID, require_worker=False)
    for i in range(5):
        await background(client, guild=str(i))
    try:
        await background(client, guild="77")
        raise AssertionError("a sixth background job was queued")
    except QueueFull:
        pass
    for i in range(5):  # the other half stays for people's own requests
        await submit(client, guild=str(i), user="3")


async def test_a_burst_worker_drains_background_work_too(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    jobs = [(await background(queue_client, channel=str(700 + i))).job_id for i in range(6)]
    worker = RecordingWorker(redis, worker_settings, NoopEngine())
    await worker.run(burst=True)
    assert sorted(j for b in worker.batches_taken for j in b) == sorted(jobs)
    for job_id in jobs:
        assert (await queue_client.status(job_id)).state is JobState.DONE
    assert await aw(redis.llen(queue_client.keys.background_ring)) == 0
