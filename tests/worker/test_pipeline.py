"""The pipelined worker: the next batch is taken, fetched and prepared while one generates
(PIPELINE, the default), and the queue's guarantees hold with a batch taken ahead: a job
cancelled there gives no answer, every other job exactly one (the hand-back on stop is in
test_worker_process.py). The demo engine's prepared path gives the same outputs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from redis.asyncio import Redis

from inference.queue import QueueClient
from inference.settings import EngineSettings, WorkerSettings
from inference.tasks import InferenceRequest, InferenceResult, Task, TaskSpec
from inference.worker import Worker
from inference.worker.testing import SleepEngine
from tests.support.discord_server.harness import one_shape_scene, png_bytes
from tests.support.queue import collect, submit

DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "palicord-tiny"


class Timeline(SleepEngine):
    """Records when each batch was prepared and when each generated."""

    def __init__(self, sleep_s: float) -> None:
        super().__init__(sleep_s)
        self.events: list[tuple[str, int, float]] = []  # (what, batch size, monotonic)
        self._lock = threading.Lock()

    def _log(self, what: str, n: int) -> None:
        with self._lock:
            self.events.append((what, n, time.monotonic()))

    def prepare(self, requests: Sequence[InferenceRequest]) -> list[InferenceRequest]:
        self._log("prepare", len(requests))
        return super().prepare(requests)

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        self._log("start", len(requests))
        try:
            return super().generate(requests)
        finally:
            self._log("end", len(requests))


async def run_until(worker: Worker, client: QueueClient, count: int) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await collect(client, count, timeout_s=20)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("pipeline", [True, False])
async def test_the_next_batch_is_prepared_while_one_generates(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings, pipeline: bool
) -> None:
    for _ in range(8):
        await submit(queue_client)
    engine = Timeline(0.4)
    settings = worker_settings.model_copy(update={"pipeline": pipeline, "linger_s": 0.0})
    await run_until(Worker(redis, settings, engine), queue_client, 8)
    kinds = [what for what, _, _ in engine.events]
    assert kinds.count("start") == 2 and kinds.count("prepare") == 2
    second_prepare = [at for what, _, at in engine.events if what == "prepare"][1]
    first_end = next(at for what, _, at in engine.events if what == "end")
    # Pipelined, batch 2 is ready before batch 1 is done; else only after it.
    assert (second_prepare < first_end) is pipeline


@pytest.mark.slow
async def test_a_job_cancelled_in_the_batch_taken_ahead_is_not_answered(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    ids = [(await submit(queue_client)).job_id for _ in range(8)]
    engine = Timeline(0.5)
    worker = Worker(redis, worker_settings.model_copy(update={"linger_s": 0.0}), engine)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            while sum(1 for what, _, _ in engine.events if what == "prepare") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert await queue_client.cancel(ids[-1])  # taken ahead, not yet run
        results = await collect(queue_client, 7, timeout_s=20)
        await asyncio.sleep(0.6)  # time for a wrong eighth answer to arrive
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert sorted(d.result.job_id for d in results) == sorted(ids[:-1])
    assert await redis.xlen(queue_client.keys.results("bot-test")) == 0
    assert await queue_client.pending() == 0


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_MODEL.exists(), reason="the demo checkpoint is not built")
def test_the_demo_engine_gives_the_same_answers_prepared_or_not() -> None:
    from inference.engine.paligemma import PaliGemmaEngine

    engine = PaliGemmaEngine.from_settings(
        EngineSettings(model_id=str(DEMO_MODEL), hf_offline=True, batch_size=4)
    )
    scene = one_shape_scene(seed=101)
    requests = [
        InferenceRequest(TaskSpec.build(Task.CAPTION), png_bytes(scene.image)),
        InferenceRequest(TaskSpec.build(Task.DETECT, objects=scene.shapes[0].kind),
                         png_bytes(scene.image)),
        InferenceRequest(TaskSpec.build(Task.CAPTION), b"not a picture"),
    ]  # fmt: skip
    prepared = engine.prepare(requests)
    assert all(p.prepared is not None for p in prepared)
    assert engine.generate(prepared) == engine.generate(requests)
    assert engine.generate(prepared)[2].error == "image_not_image"
