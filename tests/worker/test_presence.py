from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from inference.queue import QueueClient
from inference.queue.keys import Keys, check_part
from inference.queue.messages import WorkerInfo
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.worker.presence import Presence, default_worker_id


async def test_announce_then_withdraw(redis: Redis, worker_settings: WorkerSettings) -> None:
    keys = Keys(worker_settings.key_prefix)
    presence = Presence(
        redis,
        keys,
        worker_settings,
        scripts=Scripts(redis, keys),
        worker_id="w-1",
        model_id="demo",
        capabilities=("caption", "detect"),
    )
    await presence.announce()
    info = WorkerInfo.from_json(await redis.get(keys.worker("w-1")))
    assert (info.model_id, info.capabilities, info.batch_size) == ("demo", ("caption", "detect"), 4)
    assert (
        0 < await redis.ttl(keys.worker("w-1")) <= int(worker_settings.worker_heartbeat_ttl_s) + 1
    )
    assert await redis.zscore(keys.workers, "w-1") is not None

    await presence.withdraw()
    assert await redis.exists(keys.worker("w-1")) == 0
    assert await redis.zscore(keys.workers, "w-1") is None


def test_worker_ids_always_fit_in_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "gpü-höst:7 (rack)")
    assert check_part(default_worker_id()).startswith("gp--h-st-7--rack-")
    with pytest.raises(ValidationError, match="worker_id"):
        WorkerSettings(worker_id="gpu:0")
    assert WorkerSettings(worker_id="gpu-0.a_b").worker_id == "gpu-0.a_b"


async def test_a_planted_worker_id_does_not_break_the_listing(
    redis: Redis, worker_settings: WorkerSettings
) -> None:
    keys = Keys(worker_settings.key_prefix)
    presence = Presence(
        redis,
        keys,
        worker_settings,
        scripts=Scripts(redis, keys),
        worker_id="w-ok",
        model_id="demo",
        capabilities=("ocr",),
    )
    await presence.announce()
    await redis.zadd(keys.workers, {"bad:id": 2e9})
    client = QueueClient(redis, worker_settings, instance_id="b")
    assert [w.worker_id for w in await client.workers()] == ["w-ok"]
