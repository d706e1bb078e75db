"""Palicord on a real three-master Redis Cluster (REDIS_CLUSTER=true): the queue and its
Lua scripts, the reaper, the bot's own stores, and a request end to end through the bot
and a worker process, all with redis-py's cluster client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ResponseError

from bot.client import PalicordBot
from bot.errors import DailyQuotaReached
from bot.guild_config import GuildConfig, GuildConfigStore
from bot.limits import Limits
from bot.replies import ReplyAddress
from inference.detection import iou
from inference.queue import JobState, Keys, QueueClient, QueueSettings, RequestRecords, connect
from inference.queue.connection import is_cluster
from inference.queue.messages import JobResult
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import Task, TaskSpec
from inference.worker.testing import NoopEngine
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, boxes
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
)
from tests.support.processes import spawn_worker, stop
from tests.support.queue import collect
from tests.support.redis_cluster import redis_cluster

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


@pytest.fixture
def settings(cluster_url: str) -> WorkerSettings:
    return WorkerSettings(
        redis_url=cluster_url,
        redis_cluster=True,
        key_prefix="{c-" + uuid.uuid4().hex[:10] + "}:",
        linger_s=0.0,
        idle_wait_s=0.2,
        lease_s=1.0,
        reap_interval_s=0.2,
    )


@pytest.fixture
async def cluster(settings: WorkerSettings) -> AsyncIterator[Redis]:
    """What `connect` gives with REDIS_CLUSTER=true (typed as Redis there, see its doc)."""
    redis = connect(settings)
    assert is_cluster(redis)
    async with redis:
        yield redis


def nodes(redis: Redis, prefix: str) -> tuple[ClusterNode, list[ClusterNode]]:
    """The node that holds the slot of `prefix`'s keys, and all primaries."""
    assert isinstance(redis, RedisCluster)
    owner = redis.get_node_from_key(Keys(prefix).guild_ring)
    assert owner is not None
    return owner, redis.get_primaries()


def test_a_cluster_needs_one_hash_slot_for_the_queue(cluster_url: str) -> None:
    with pytest.raises(ValueError, match="hash tag"):
        QueueSettings(redis_url=cluster_url, redis_cluster=True, key_prefix="palicord:")
    assert QueueSettings(redis_cluster=True).key_prefix == "{palicord}:"


async def test_the_queue_spans_the_cluster_and_its_keys_share_one_slot(
    cluster: Redis, settings: WorkerSettings, cluster_url: str
) -> None:
    client = QueueClient(cluster, settings, instance_id="bot-c", require_worker=False)
    job = client.new_job(TaskSpec.build("caption"), guild_id="1", user_id="2", context={})
    submitted = await client.submit(job, b"img")
    assert (await client.status(submitted.job_id)).state is JobState.QUEUED
    # The node that holds the slot is one of three, and the others hold none of the keys.
    slot_owner, primaries = nodes(cluster, settings.key_prefix)
    assert len(primaries) == 3
    for node in primaries:
        single = Redis(host=node.host, port=int(node.port))
        async with single:
            owned = [k async for k in single.scan_iter(match=settings.key_prefix + "*")]
        assert bool(owned) == (node.name == slot_owner.name), node.name
    assert await client.cancel(submitted.job_id)
    assert (await client.status(submitted.job_id)).state is JobState.CANCELLED
    assert await client.pending() == 0


async def test_a_worker_answers_and_the_reaper_requeues_on_a_cluster(
    cluster: Redis, settings: WorkerSettings
) -> None:
    client = QueueClient(cluster, settings, instance_id="bot-c", require_worker=False)
    scripts = Scripts(cluster, client.keys)
    first = client.new_job(TaskSpec.build("caption"), guild_id="1", user_id="2", context={})
    await client.submit(first, b"img")
    # A worker that vanishes with the job: its lease lapses and the reaper requeues it.
    taken = await scripts.take("gone", 4, 0.2, [Task.CAPTION], 32)
    assert [j.job_id for j in taken] == [first.job_id]
    await asyncio.sleep(0.3)
    reaped = await scripts.reap("reaper", 3, 1.0, 10, by_heartbeat=False)
    assert reaped.requeued == 1
    second = client.new_job(TaskSpec.build("ocr"), guild_id="3", user_id="4", context={})
    await client.submit(second, b"img")
    async with running_worker(settings, NoopEngine()) as worker:
        assert [w.worker_id for w in await client.workers()] == [worker.worker_id]
        deliveries = await collect(client, 2)
    answered = {d.result.job_id: d.result for d in deliveries}
    assert set(answered) == {first.job_id, second.job_id}
    assert all(r.ok for r in answered.values())
    assert await client.pending() == 0


async def test_the_bots_stores_work_on_a_cluster(cluster: Redis, settings: WorkerSettings) -> None:
    keys = Keys(settings.key_prefix)
    store = RequestRecords(cluster, keys, Scripts(cluster, keys), settings, instance_id="bot-c")
    address = ReplyAddress(channel_id=1, user_id=2, guild_id=3, message_id=4)
    record = store.new("req", ["0.png", "1.png"], address.to_fields())
    assert await store.open(record)
    orphans = await store.orphaned(before=float("inf"), max_age_s=60)
    assert [o.request_id for o in orphans] == ["req"] and orphans[0].count == 2
    await store.close("req")
    assert await store.orphaned(before=float("inf"), max_age_s=60) == []

    for i in range(2):
        assert await store.record("req", i, JobResult(job_id=f"j{i}", context={}, text=f"t{i}"))
    [(_, fields)] = await cluster.xrange(keys.results("bot-c"))
    assert fields == {b"q": b"req"}
    read = await store.read("req")
    assert read is not None and {i: r.text for i, r in read.outcomes.items()} == {0: "t0", 1: "t1"}
    assert (await store.lease("req", 5), await store.lease("req", 5)) == ("send", "busy")
    await store.mark_delivered(read)
    assert await store.lease("req", 5) == "delivered"
    assert await store.read("req") is None

    await store.add_user_job(2, "j0", deadline_at=4e9)
    assert await store.user_jobs(2) == ["j0"]

    limits = Limits(cluster, Scripts(cluster, keys), keys, cooldown_s=0)
    assert (await limits.charge(3, 2, quota=2)).total == 2
    with pytest.raises(DailyQuotaReached):
        await limits.charge(3, 1, quota=2)
    configs = GuildConfigStore(cluster, keys)
    await configs.put(3, GuildConfig(daily_quota=9, language="de"))
    assert (await configs.get(3)).language == "de"


async def test_a_request_end_to_end_through_the_bot_and_a_worker_process(
    server: DiscordServer, settings: WorkerSettings, cluster: Redis
) -> None:
    prefix = settings.key_prefix
    # Start-up node: one that does not hold the queue's slot, so that only a cluster
    # client (one that follows MOVED) can work through it.
    owner, primaries = nodes(cluster, prefix)
    other = next(n for n in primaries if n.name != owner.name)
    cluster_url = f"redis://{other.host}:{other.port}/0"
    plain = Redis.from_url(cluster_url)
    async with plain:
        with pytest.raises(ResponseError, match="MOVED"):
            await plain.get(prefix + "pending")
    worker = spawn_worker(
        prefix, "oracle_engine", REDIS_URL=cluster_url, REDIS_CLUSTER="true", LINGER_S="0"
    )
    try:
        bot_config = bot_settings(server, prefix, redis_url=cluster_url, redis_cluster=True)
        async with running_bot(bot_config) as bot:
            assert isinstance(bot, PalicordBot)
            probe_redis = connect(settings)
            async with probe_redis, asyncio.timeout(20):
                probe = QueueClient(probe_redis, settings, instance_id="probe")
                while not await probe.workers():  # noqa: ASYNC110 (a key in Redis)
                    await asyncio.sleep(0.05)
            scene = one_shape_scene(seed=61)
            shape = scene.shapes[0]
            image = server.attachment(png_bytes(scene.image), "c.png")
            state = await server.slash(
                "detect", user=server.user("xena"), attachments={"image": image},
                objects=shape.kind,
            )  # fmt: skip
            [found] = boxes(await answer_for(server, state, timeout_s=20))
            assert iou(found["box"], shape.box) >= 0.5
    finally:
        assert stop(worker) == 0
