"""Translate Redis failures into the user-facing QueueUnavailable, once, at the boundary."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from redis import exceptions as redis_exceptions

from inference.errors import QueueUnavailable

T = TypeVar("T")


@contextmanager
def redis_boundary() -> Iterator[None]:
    """Raise QueueUnavailable (chained) for any Redis error inside the block."""
    try:
        yield
    except redis_exceptions.RedisError as exc:
        raise QueueUnavailable() from exc


async def awaited(value: Awaitable[T] | T) -> T:
    """redis-py types its asyncio commands as `Awaitable[T] | T`; this narrows them."""
    if inspect.isawaitable(value):
        return await value
    return value
