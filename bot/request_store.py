"""The bot's durable bookkeeping: per-request outcomes until the answer goes out, and each
user's outstanding jobs for /queue. In Redis, so a restarted bot carries on."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from bot.keys import BotKeys
from bot.redis_errors import awaited, redis_boundary
from inference.errors import MalformedMessage
from inference.jobs import JobResult

log = logging.getLogger(__name__)

_CLAIM_FIELD = "delivered"


class RequestStore:
    """Outcomes per request (hash field = image index) and per-user job sets."""

    def __init__(self, redis: Redis, keys: BotKeys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def record(self, request_id: str, index: int, result: JobResult) -> int:
        """Store one image's outcome; return how many images of the request have one."""
        key = self._keys.request(request_id)
        with redis_boundary():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(key, str(index), result.to_json())
            pipe.expire(key, self._ttl_s)
            pipe.hkeys(key)
            *_, fields = await pipe.execute()
        return sum(1 for f in fields if f != _CLAIM_FIELD.encode())

    async def claim(self, request_id: str) -> bool:
        """True exactly once per request: whoever gets it delivers the answer."""
        with redis_boundary():
            return bool(
                await awaited(self._redis.hsetnx(self._keys.request(request_id), _CLAIM_FIELD, "1"))
            )

    async def outcomes(self, request_id: str) -> dict[int, JobResult]:
        with redis_boundary():
            raw = await awaited(self._redis.hgetall(self._keys.request(request_id)))
        out: dict[int, JobResult] = {}
        for field, value in raw.items():
            if field == _CLAIM_FIELD.encode():
                continue
            try:
                out[int(field)] = JobResult.from_json(value)
            except (ValueError, MalformedMessage):
                log.warning("dropping a malformed stored outcome of request %s", request_id)
        return out

    async def forget(self, request_id: str) -> None:
        # Keep the claim marker until the TTL: a redelivered result must not answer again.
        key = self._keys.request(request_id)
        with redis_boundary():
            fields = [
                f for f in await awaited(self._redis.hkeys(key)) if f != _CLAIM_FIELD.encode()
            ]
            if fields:
                await awaited(self._redis.hdel(key, *fields))

    async def add_user_job(self, user_id: int, job_id: str, deadline_at: float) -> None:
        key = self._keys.user_jobs(user_id)
        with redis_boundary():
            pipe = self._redis.pipeline(transaction=True)
            pipe.zadd(key, {job_id: deadline_at})
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def remove_user_job(self, user_id: int, job_id: str) -> None:
        with redis_boundary():
            await self._redis.zrem(self._keys.user_jobs(user_id), job_id)

    async def user_jobs(self, user_id: int) -> list[str]:
        """The user's jobs still within their deadline, oldest first."""
        key = self._keys.user_jobs(user_id)
        with redis_boundary():
            await self._redis.zremrangebyscore(key, "-inf", time.time())
            ids = await self._redis.zrange(key, 0, -1)
        return [i.decode() for i in ids]
