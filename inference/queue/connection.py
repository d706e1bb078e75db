"""The Redis connection and the one place its failures become Palicord's.

Every Redis call in both programs (the queue client, the script wrappers, the worker's
own reads, the bot's stores) runs inside `redis_boundary()`, so a Redis outage always
reaches callers as `QueueUnavailable`, a message fit for users, with the redis-py error
chained as its cause for the logs. Callers never catch redis-py's exceptions themselves.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline

from inference.errors import QueueBusy, QueueUnavailable
from inference.queue.settings import QueueSettings

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5
HEALTH_CHECK_INTERVAL_S = 30
RECANCEL_EVERY_S = 0.5
FIRST_BACKOFF_S = 0.1


def connect(settings: QueueSettings) -> Redis:
    """A Redis client for `settings.redis_url` (redis:// or rediss://, password allowed);
    with `settings.redis_cluster`, redis-py's cluster client with that URL as its start-up
    node. The cluster client is typed as `Redis` on purpose: it offers the same commands
    for the one-slot keys Palicord uses, and the two places that differ (transactions and
    scripts in pipelines) ask `is_cluster` instead of every caller carrying two types."""
    # A Redis that accepts TCP but never answers must fail rather than hang a request:
    # every command, blocking reads included, ends within `redis_timeout_s`.
    options: dict[str, Any] = {
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": settings.redis_timeout_s,
        "socket_keepalive": True,
    }
    url = settings.redis_url.get_secret_value()
    if settings.redis_cluster:
        return cast(Redis, RedisCluster.from_url(url, **options))
    client: Redis = Redis.from_url(url, **options)
    return client


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def atomic_pipeline(redis: Redis) -> Pipeline:
    """A pipeline for commands on one key that belong together (MULTI/EXEC on a single
    Redis). redis-py's cluster pipeline has no transactions; there the commands still go
    to the key's node in one batch, and callers must not depend on their isolation."""
    return redis.pipeline(transaction=not is_cluster(redis))


@contextmanager
def redis_boundary() -> Iterator[None]:
    """Raise QueueUnavailable (chained) for any Redis error inside the block.

    All of redis-py's errors are translated, not only lost connections: a failover's
    read-only replica, a full server under `noeviction`, or a script refused because a
    key holds the wrong type all mean the same to a user (the queue cannot take the
    request now) and the same to a worker (back off and try again).
    """
    try:
        yield
    except redis_errors.OutOfMemoryError as exc:
        # Redis at its maxmemory: finishing jobs frees it, so "in a moment" is honest.
        raise QueueBusy() from exc
    except redis_errors.RedisError as exc:
        raise QueueUnavailable() from exc


async def awaited(value: Awaitable[T] | T) -> T:
    """redis-py types its asyncio commands as `Awaitable[T] | T`; this narrows them."""
    if inspect.isawaitable(value):
        return await value
    return value


def describe(exc: BaseException) -> str:
    """A log line's worth about a translated error: its Redis cause when there is one."""
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    return f"{type(cause).__name__}: {cause}"


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and return once every one of them has finished.

    A single cancel is not enough: redis-py can swallow one that lands at the wrong
    moment inside a command (redis/redis-py#2028, #2551), and the task's loop then runs
    on, so a plain gather after one cancel can wait forever. Ask again until they stop.
    Their results and exceptions are left on the tasks.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY_S)


class Backoff:
    """Exponential backoff with jitter, for riding out Redis outages (worker and bot alike)."""

    def __init__(self, max_s: float, first_s: float = FIRST_BACKOFF_S) -> None:
        self._first_s, self._max_s, self._attempt = first_s, max_s, 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay_s(self) -> float:
        delay = min(self._max_s, self._first_s * 2.0**self._attempt)
        self._attempt += 1
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter
