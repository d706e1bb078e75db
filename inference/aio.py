"""asyncio helpers shared by the bot and the worker (torch-free)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

RECANCEL_EVERY_S = 0.5


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
