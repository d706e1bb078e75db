"""The Redis boundary: every Redis failure, on every path of both programs, reaches callers
as QueueUnavailable; and cancel_and_wait stops tasks that swallow a cancel (as redis-py
can)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from bot.guild_config import GuildConfigStore
from bot.limits import Limits
from inference.errors import QueueUnavailable
from inference.queue import (
    Delivery,
    JobResult,
    Keys,
    QueueClient,
    QueueSettings,
    RequestRecords,
)
from inference.queue.connection import cancel_and_wait, describe, redis_boundary
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import Task, TaskSpec
from inference.worker.presence import Presence

# Nothing listens on port 1: every command fails to connect.
NOWHERE = "redis://127.0.0.1:1/0"


async def _swallows_first_cancels(times: int, stopped: list[str]) -> None:
    swallowed = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed == times:
                stopped.append("stopped")
                raise
            swallowed += 1  # what redis-py does when a cancel races its socket timeout


@pytest.mark.slow
async def test_a_task_that_swallows_cancels_is_cancelled_until_it_stops() -> None:
    stopped: list[str] = []
    stubborn = asyncio.create_task(_swallows_first_cancels(2, stopped))
    plain = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([stubborn, plain]), timeout=5)
    assert stubborn.cancelled() and plain.cancelled()
    assert stopped == ["stopped"]


async def test_one_cancel_is_not_enough_for_such_a_task() -> None:
    # The reason the helper exists: a single cancel leaves this task running.
    stubborn = asyncio.create_task(_swallows_first_cancels(1, []))
    await asyncio.sleep(0)
    stubborn.cancel()
    done, _ = await asyncio.wait({stubborn}, timeout=0.2)
    assert not done
    await cancel_and_wait([stubborn])
    assert stubborn.cancelled()


async def test_finished_tasks_keep_their_results() -> None:
    async def answer() -> int:
        return 42

    finished = asyncio.create_task(answer())
    await finished
    await cancel_and_wait([finished])
    assert finished.result() == 42


def test_the_boundary_translates_every_redis_error_and_keeps_the_cause() -> None:
    for error in (
        redis_errors.ConnectionError("refused"),
        redis_errors.TimeoutError("slow"),
        redis_errors.ResponseError("WRONGTYPE Operation against a key"),
        redis_errors.ReadOnlyError("You can't write against a read only replica."),
    ):
        with pytest.raises(QueueUnavailable) as caught, redis_boundary():
            raise error
        assert caught.value.__cause__ is error
        assert type(error).__name__ in describe(caught.value)
    with pytest.raises(KeyError), redis_boundary():  # not Redis's: not ours to translate
        raise KeyError("x")


@pytest.fixture
async def nowhere() -> AsyncIterator[Redis]:
    client = Redis.from_url(NOWHERE, socket_connect_timeout=1)
    try:
        yield client
    finally:
        await client.aclose()


async def test_the_queue_client_translates_on_every_path(nowhere: Redis, redis_prefix: str) -> None:
    settings = QueueSettings(key_prefix=redis_prefix)
    client = QueueClient(nowhere, settings, instance_id="bot-x", require_worker=False)
    job = client.new_job(TaskSpec.build(Task.CAPTION), guild_id=1, user_id=2)
    result = JobResult(job_id=job.job_id, context={})
    calls: list[Awaitable[object]] = [
        client.submit(job, b"img"),
        client.status(job.job_id),
        client.cancel(job.job_id),
        client.workers(),
        client.pending(),
        client.ack(Delivery("1-0", job_result=result)),  # acknowledging a result
        anext(client.results()),  # creating the results stream's consumer group
    ]
    for call in calls:
        with pytest.raises(QueueUnavailable):
            await call


async def test_the_bots_stores_and_the_worker_translate_too(
    nowhere: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    presence = Presence(
        nowhere,
        keys,
        WorkerSettings(key_prefix=redis_prefix),
        scripts=Scripts(nowhere, keys),
        worker_id="w",
        model_id="m",
        capabilities=("caption",),
    )
    queue_settings = QueueSettings(key_prefix=redis_prefix)
    records = RequestRecords(nowhere, keys, Scripts(nowhere, keys), queue_settings, instance_id="b")
    calls: list[Awaitable[object]] = [
        records.lease("r", 1),
        records.user_jobs(3),
        records.read("r"),
        records.open(records.new("r", [""], {})),
        GuildConfigStore(nowhere, keys).get(4),
        Limits(nowhere, Scripts(nowhere, keys), keys, cooldown_s=0).charge(5, 1, quota=9),
        Scripts(nowhere, keys).take("w", 1, 1.0, Task, 8),
        presence.announce(),
        presence.warn_if_evicting(),
    ]
    for call in calls:
        with pytest.raises(QueueUnavailable):
            await call
    await presence.withdraw()  # best effort: logs, never raises
