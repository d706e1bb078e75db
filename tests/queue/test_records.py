"""One record per request (inference.queue.records): created once, one outcome per item,
one stream entry when the last is in, pictures kept once and pinned while a job needs
them. Real Redis, the real Lua scripts, a no-op engine for the worker."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from inference.errors import MalformedMessage, PictureExpired
from inference.queue import QueueClient, QueueSettings, RequestRecord
from inference.queue.memory import PICTURE, picture_digest
from inference.queue.messages import JobResult
from inference.settings import WorkerSettings
from inference.tasks import Task, TaskSpec
from inference.worker import Worker
from inference.worker.testing import NoopEngine
from tests.support.queue import BOT_ID, aw

ADDRESS = {"ch": "1", "u": "2", "g": "3", "mid": "4", "tok": "secret-token"}


def result(job_id: str, text: str = "a cat") -> JobResult:
    return JobResult(job_id=job_id, context={}, task=Task.CAPTION, text=text)


async def entries(redis: Redis, client: QueueClient) -> list[dict[bytes, bytes]]:
    return [f for _, f in await redis.xrange(client.keys.results(client.instance_id))]


async def queue_item(
    client: QueueClient, record: RequestRecord, index: int, picture: bytes, user: str = "2"
) -> str:
    job = client.new_job(
        TaskSpec.build(Task.CAPTION),
        guild_id="3",
        user_id=user,
        job_id=record.job_id(index),
        request=(record.request_id, index),
    )
    await client.submit(job, picture)
    return job.job_id


def test_a_record_round_trips_and_refuses_what_it_cannot_trust() -> None:
    record = RequestRecord("r1", BOT_ID, ("a.png", "b.png"), ADDRESS, route="", created_at=5.0)
    assert RequestRecord.from_json(record.to_json()) == record
    good = json.loads(record.to_json())
    for bad in (
        {**good, "v": 2},
        {**good, "labels": []},  # no items
        {**good, "labels": ["x"] * 65},  # more than a request may hold
        {**good, "labels": [1]},
        {**good, "reply": {"a": 1}},
        {**good, "reply": {str(i): "x" for i in range(25)}},
        {**good, "request_id": "a:b"},  # would escape its key
        {k: v for k, v in good.items() if k != "reply_to"},
    ):
        with pytest.raises(MalformedMessage):
            RequestRecord.from_json(json.dumps(bad))
    with pytest.raises(MalformedMessage):
        RequestRecord.from_json("[" * 100_000)


async def test_a_request_is_opened_once_and_told_once(
    redis: Redis, queue_client: QueueClient
) -> None:
    records = queue_client.records
    record = records.new("once", ["a.png", "b.png"], ADDRESS)
    assert await records.open(record)
    assert not await records.open(record)  # the same request again: refused
    assert not await records.record("once", 2, result("once-2"))  # past its items
    assert not await records.record("nobody", 0, result("x"))  # no such record
    assert await records.record("once", 0, result("once-0", "first"))
    assert not await records.record("once", 0, result("once-0", "second"))  # once per item
    assert await entries(redis, queue_client) == []
    assert await records.record("once", 1, result("once-1"))
    assert await entries(redis, queue_client) == [{b"q": b"once"}]
    read = await records.read("once")
    assert read is not None and read.labels == ("a.png", "b.png")
    assert {i: r.text for i, r in read.outcomes.items()} == {0: "first", 1: "a cat"}


async def test_two_requests_on_one_picture_keep_one_copy_until_both_are_answered(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # The measure: copies of one picture in Redis while two requests use it
    # (before: its follow-up copy plus one per job, three; now one).
    picture = b"the same picture"
    digest = picture_digest(picture)
    records = queue_client.records
    for name in ("first", "second"):
        record = records.new(name, ["p.png"], ADDRESS)
        await records.open(record)
        await queue_item(queue_client, record, 0, picture, user=name)
    holding = [k async for k in redis.scan_iter(match=f"{queue_client.keys.prefix}*")]
    strings = [k for k in holding if await redis.type(k) == b"string"]
    copies = [k for k in strings if await redis.get(k) == picture]
    assert copies == [queue_client.keys.stash(PICTURE, digest).encode()]
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    assert sorted(e[b"q"] for e in await entries(redis, queue_client)) == [b"first", b"second"]
    assert await aw(redis.hget(queue_client.keys.picture_pins, digest)) is None


async def test_a_picture_a_queued_job_needs_is_never_dropped_for_space(
    redis: Redis, queue_settings: QueueSettings, worker_settings: WorkerSettings
) -> None:
    small = queue_settings.model_copy(
        update={"picture_store_max_bytes": 1024 * 1024, "max_image_bytes": 1024 * 1024}
    )
    client = QueueClient(redis, small, instance_id=BOT_ID, require_worker=False)
    waiting, newer = b"w" * 700_000, b"n" * 700_000
    record = client.records.new("pinned", ["w.png"], ADDRESS)
    await client.records.open(record)
    await queue_item(client, record, 0, waiting)
    # A follow-up's picture pushes the store over its budget: the oldest unpinned would
    # go, but the only older one is the queued job's, so it stays.
    await client.memory.keep_picture(newer)
    assert await client.memory.picture(picture_digest(waiting)) == waiting
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    read = await client.records.read("pinned")
    assert read is not None and read.outcomes[0].ok  # it ran on its picture
    # Once no job needs it, the store is brought back within its budget at once.
    assert await client.memory.picture(picture_digest(waiting)) is None
    assert await client.memory.picture(picture_digest(newer)) == newer


async def test_a_job_on_a_picture_no_longer_kept_is_refused_before_queueing(
    queue_client: QueueClient,
) -> None:
    job = queue_client.new_job(
        TaskSpec.build(Task.CAPTION), guild_id="3", user_id="2", picture="0" * 32
    )
    with pytest.raises(PictureExpired):
        await queue_client.submit(job)
    assert await queue_client.pending() == 0


async def test_a_cancelled_request_is_never_answered(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    records = queue_client.records
    record = records.new("cancelled", ["a.png", "b.png"], ADDRESS)
    await records.open(record)
    await records.record("cancelled", 0, result("cancelled-0"))
    job_id = await queue_item(queue_client, record, 1, b"picture")
    assert await queue_client.cancel(job_id)
    await records.drop("cancelled")
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    assert await entries(redis, queue_client) == []
    assert await records.read("cancelled") is None


async def test_a_delivered_request_keeps_only_its_mark(
    redis: Redis, queue_client: QueueClient
) -> None:
    records = queue_client.records
    record = records.new("sent", ["a.png"], ADDRESS)
    await records.open(record)
    await records.record("sent", 0, result("sent-0"))
    read = await records.read("sent")
    assert read is not None
    assert (await records.lease("sent", 5), await records.lease("sent", 5)) == ("send", "busy")
    await records.mark_delivered(read)
    assert await records.lease("sent", 5) == "delivered"
    assert await records.read("sent") is None
    kept = await aw(redis.hgetall(queue_client.keys.request_record("sent")))
    assert b"secret-token" not in b"".join(kept.values())  # the reply token is gone
    assert 0 < await redis.ttl(queue_client.keys.request_record("sent")) <= records.ttl_s


async def test_a_version_1_job_runs_on_its_own_picture_and_answers_alone(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # What the previous release queued: a version 1 message (no picture digest, no
    # request), its picture under img:<job>, its reply address in its context.
    keys = queue_client.keys
    context = {"rid": "old", "i": "0", "n": "1", **ADDRESS}
    job = queue_client.new_job(
        TaskSpec.build(Task.CAPTION), guild_id="3", user_id="2", context=context
    )
    await queue_client.submit(job, b"old picture")
    digest = picture_digest(b"old picture")
    v1 = {k: v for k, v in json.loads(job.to_json()).items() if k not in ("picture", "index")}
    await aw(redis.hset(keys.job(job.job_id), mapping={"data": json.dumps({**v1, "v": 1})}))
    await aw(redis.hdel(keys.job(job.job_id), "p"))
    await aw(redis.hdel(keys.picture_pins, digest))
    await redis.delete(keys.stash(PICTURE, digest))
    await redis.set(keys.image(job.job_id), b"old picture")
    await Worker(redis, worker_settings, NoopEngine()).run(burst=True)
    [entry] = await entries(redis, queue_client)
    answered = JobResult.from_json(entry[b"r"])
    assert answered.ok and answered.context["rid"] == "old"
    assert not await redis.exists(keys.image(job.job_id), keys.job(job.job_id))


def test_a_version_1_context_is_checked_before_anything_is_built_from_it() -> None:
    base = {"rid": "old", "i": "0", "n": "1", **ADDRESS}
    for bad in ({**base, "n": "9" * 500}, {**base, "n": "0"}, {**base, "i": "1"}, {"rid": "x"}):
        with pytest.raises(MalformedMessage):
            RequestRecord.from_v1_context(bad, BOT_ID)
    # The previous release's alt text keeps its route and what its reply is made from.
    alt = {**base, "via": "alt", "m": "5", "np": "1", "lang": "en", "sz": "10", "p": "0"}
    record = RequestRecord.from_v1_context(alt, BOT_ID)
    assert record.route == "alt" and record.reply["m"] == "5" and "p" not in record.reply


async def test_a_stale_pin_or_an_oversized_picture_never_costs_a_kept_one(
    redis: Redis, queue_settings: QueueSettings
) -> None:
    small = queue_settings.model_copy(
        update={"picture_store_max_bytes": 1024 * 1024, "max_image_bytes": 1024 * 1024}
    )
    client = QueueClient(redis, small, instance_id=BOT_ID, require_worker=False)
    memory, keys = client.memory, client.keys
    kept = b"k" * 600_000
    digest = await memory.keep_picture(kept)
    # Something bigger than the whole store under the same id is refused, and what is
    # kept under it stays.
    await client.scripts.stash(
        PICTURE, digest, b"x" * 2_000_000, ttl_s=60, max_bytes=small.picture_store_max_bytes
    )
    assert await memory.picture(digest) == kept
    # A pin whose picture is gone (its job deleted by hand) does not hold the store over
    # its budget for ever: the next store that needs room lets it go.
    await aw(redis.hset(keys.picture_pins, digest, "1"))
    await redis.delete(keys.stash(PICTURE, digest))
    await memory.keep_picture(b"n" * 600_000)
    assert await aw(redis.hget(keys.picture_pins, digest)) is None
    assert int(await aw(redis.get(keys.stash_bytes(PICTURE)))) == 600_000
