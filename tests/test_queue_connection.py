"""cancel_and_wait: tasks that swallow a cancel (as redis-py can) still get stopped."""

from __future__ import annotations

import asyncio

from inference.queue.connection import cancel_and_wait


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
