from __future__ import annotations

from redis.asyncio import Redis

from inference.queue.keys import Keys
from inference.queue.messages import WorkerInfo
from inference.settings import WorkerSettings
from inference.worker.presence import Presence


async def test_announce_then_withdraw(redis: Redis, worker_settings: WorkerSettings) -> None:
    keys = Keys(worker_settings.key_prefix)
    presence = Presence(
        redis,
        keys,
        worker_settings,
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
