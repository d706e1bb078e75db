"""What the bot keeps in Redis about its requests: each request's per-image outcomes and
its delivered mark, the lease of the task sending its answer, the intake records a
restarted bot answers from, and each person's jobs for /queue."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Literal

from redis.asyncio import Redis

from bot.replies import ItemContext
from inference.errors import MalformedMessage
from inference.queue import JobResult, Keys, redis_boundary
from inference.queue.connection import atomic_pipeline, awaited

log = logging.getLogger(__name__)

_DELIVERED_FIELD = "delivered"
Lease = Literal["delivered", "send", "busy"]


class RequestStore:
    """Outcomes per request (hash field = image index) and per-user job sets."""

    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int, intake_ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        # An intake older than the interaction token it would answer with is dropped.
        self._intake_ttl_s = intake_ttl_s

    async def record(self, request_id: str, index: int, result: JobResult) -> int:
        """Store one image's outcome; return how many images of the request have one.
        Two results recorded at once may both count them all: the delivery lease lets
        only one of them send the answer (`bot.delivery`)."""
        key = self._keys.request(request_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hset(key, str(index), result.to_json())
            pipe.expire(key, self._ttl_s)
            pipe.hkeys(key)
            *_, fields = await pipe.execute()
        return sum(1 for f in fields if f.isdigit())

    async def lease(self, request_id: str, ttl_s: float) -> Lease:
        """In one round trip: "delivered" when the answer is out already, "send" for the
        one caller that may send it now (for `ttl_s` at most), else "busy"."""
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hexists(self._keys.request(request_id), _DELIVERED_FIELD)
            pipe.set(self._keys.sending(request_id), b"1", px=int(ttl_s * 1000), nx=True)
            delivered, leased = await pipe.execute()
        return "delivered" if delivered else "send" if leased else "busy"

    async def release(self, request_id: str) -> None:
        with redis_boundary():
            await self._redis.delete(self._keys.sending(request_id))

    async def mark_delivered(self, request_id: str) -> None:
        """Discord confirmed the answer: no later result of this request answers again."""
        key = self._keys.request(request_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hset(key, _DELIVERED_FIELD, "1")
            pipe.expire(key, self._ttl_s)
            pipe.delete(self._keys.sending(request_id))
            await pipe.execute()

    async def outcomes(self, request_id: str) -> dict[int, JobResult]:
        with redis_boundary():
            raw = await awaited(self._redis.hgetall(self._keys.request(request_id)))
        out: dict[int, JobResult] = {}
        for field, value in raw.items():
            if not field.isdigit():  # the delivered mark
                continue
            try:
                out[int(field)] = JobResult.from_json(value)
            except (ValueError, MalformedMessage):
                log.warning("dropping a malformed stored outcome of request %s", request_id)
        return out

    async def forget(self, request_id: str) -> None:
        # Keep the delivered mark until the TTL: a result read again must not answer again.
        key = self._keys.request(request_id)
        with redis_boundary():
            fields = [
                f for f in await awaited(self._redis.hkeys(key)) if f != _DELIVERED_FIELD.encode()
            ]
            if fields:
                await awaited(self._redis.hdel(key, *fields))

    async def begin_intake(self, instance_id: str, items: Sequence[ItemContext]) -> None:
        """Remember an acknowledged request until all its images are queued or it is
        refused (`end_intake`): a bot that dies in between finds it when it starts again."""
        record = json.dumps({"at": time.time(), "items": [i.to_context() for i in items]})
        key = self._keys.intake(instance_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hset(key, items[0].request_id, record)
            pipe.expire(key, math.ceil(self._intake_ttl_s))
            await pipe.execute()

    async def end_intake(self, instance_id: str, request_id: str) -> None:
        with redis_boundary():
            await awaited(self._redis.hdel(self._keys.intake(instance_id), request_id))

    async def orphaned_intakes(
        self, instance_id: str, *, before: float
    ) -> dict[str, list[ItemContext]]:
        """Intakes begun before `before` (this run's start) and never ended, younger than
        the interaction tokens they would answer with; older ones are dropped."""
        key = self._keys.intake(instance_id)
        with redis_boundary():
            raw = await awaited(self._redis.hgetall(key))
        out: dict[str, list[ItemContext]] = {}
        for field, value in raw.items():
            try:
                record = json.loads(value)
                items = [ItemContext.from_context(c) for c in record["items"]]
                begun_at = float(record["at"])
            except (ValueError, KeyError, TypeError, MalformedMessage):
                log.warning("dropping a malformed intake record")
                await self.end_intake(instance_id, field.decode(errors="replace"))
                continue
            if begun_at < time.time() - self._intake_ttl_s:
                await self.end_intake(instance_id, field.decode())
            elif begun_at < before and items:
                out[field.decode()] = items
        return out

    async def add_user_job(self, user_id: int, job_id: str, deadline_at: float) -> None:
        key = self._keys.user_jobs(user_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
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
