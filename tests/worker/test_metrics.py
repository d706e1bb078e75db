"""The worker's metrics and health endpoints, scraped over HTTP and parsed with
prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest
from prometheus_client import generate_latest
from redis.asyncio import Redis

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.ops import serve_ops
from inference.queue import Job, JobResult, QueueClient
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings
from inference.tasks import InferenceResult, Task, TaskSpec
from inference.worker import Worker, outcomes
from inference.worker.metrics import WorkerMetrics
from inference.worker.outcomes import Outcome
from inference.worker.testing import NoopEngine
from sandbox.stack import free_port
from tests.support.processes import get, samples, spawn_worker, until_ready
from tests.support.queue import collect, submit


async def test_a_worker_reports_its_jobs_batches_and_the_queue(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    for i in range(5):
        await submit(queue_client, user=str(i))
    late = queue_client.new_job(TaskSpec.build("ocr"), guild_id=2, user_id=9)
    await queue_client.submit(dataclasses.replace(late, deadline_at=0.0), b"x")  # expired
    metrics = WorkerMetrics()
    worker = Worker(redis, worker_settings, NoopEngine(), metrics=metrics)
    ops = serve_ops("127.0.0.1", free_port(), metrics.registry, lambda: worker.ready)
    assert ops is not None
    base = f"http://127.0.0.1:{ops.port}"
    try:
        assert await asyncio.to_thread(get, base + "/healthz") == (200, "ok\n")
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 503  # not started
        await worker.run(burst=True)
        await collect(queue_client, 6)
        worker.ready = True  # burst mode has returned; a serving worker stays ready
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        status, text = await asyncio.to_thread(get, base + "/metrics")
    finally:
        ops.close()
    assert status == 200
    got = samples(text)
    assert got[("palicord_jobs_total", (("code", ""), ("outcome", "answered")))] == 5
    timed_out = (("code", "timed_out"), ("outcome", "timed_out"))
    assert got[("palicord_jobs_total", timed_out)] == 1
    assert got[("palicord_queue_wait_seconds_count", ())] == 6
    assert got[("palicord_batch_size_sum", ())] == 6
    assert got[("palicord_batch_run_seconds_count", ())] >= 2
    assert all(name.startswith("palicord_") for name, _ in got)
    assert not any("guild" in key for _, labels in got for key, _ in labels)


@pytest.mark.slow
async def test_the_worker_process_serves_health_and_metrics(
    redis: Redis, worker_settings: WorkerSettings
) -> None:
    port = free_port()
    proc = spawn_worker(worker_settings.key_prefix, "noop_engine", METRICS_PORT=str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        await until_ready(base, timeout_s=20)
        async with asyncio.timeout(10):  # one keep-alive tick samples the queue
            while True:
                got = samples((await asyncio.to_thread(get, base + "/metrics"))[1])
                if got.get(("palicord_workers_alive", ()), 0) >= 1:
                    break
                await asyncio.sleep(0.1)
        assert got[("palicord_queue_depth", ())] == 0
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
    finally:
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 10) == 0


async def test_an_outcome_settled_twice_is_counted_once(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # A robbed (frozen) worker and its rescuer both settle the job: one answer, one count.
    await submit(queue_client)
    scripts = Scripts(redis, queue_client.keys)
    [taken] = await scripts.take("w1", 1, 30.0, Task, 8)
    job = outcomes.decode(taken, "w1")
    assert isinstance(job, Job)
    result = JobResult.success(job, InferenceResult(Task.CAPTION, "a cat"), worker_id="w1")
    outcome = Outcome(job.job_id, job.reply_to, result)
    metrics = WorkerMetrics()
    for worker_id in ("w1", "w2"):
        metrics.settled(await outcomes.publish(scripts, [outcome], worker_settings, worker_id))
    got = samples(generate_latest(metrics.registry).decode())
    assert got[("palicord_jobs_total", (("code", ""), ("outcome", "answered")))] == 1
    assert len(await collect(queue_client, 1)) == 1


def test_feature_cache_counts_are_sampled_by_their_increase() -> None:
    metrics = WorkerMetrics()
    metrics.features({"hits": 2, "misses": 5, "bytes": 4096})
    metrics.features({"hits": 3, "misses": 5, "bytes": 8192})
    metrics.features({"hits": 1, "misses": 0, "bytes": 0})  # the engine's cache was reset
    metrics.features({})  # a stand-in engine has no cache
    got = samples(generate_latest(metrics.registry).decode())
    assert got[("palicord_feature_cache_lookups_total", (("result", "hit"),))] == 4
    assert got[("palicord_feature_cache_lookups_total", (("result", "miss"),))] == 5
    assert got[("palicord_feature_cache_bytes", ())] == 0


@pytest.mark.slow
async def test_a_follow_up_on_the_same_picture_shows_as_a_feature_cache_hit(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    from inference.engine.paligemma import PaliGemmaEngine  # torch: only where needed
    from tests.support.demo import demo_settings

    engine = PaliGemmaEngine.from_settings(demo_settings())
    metrics = WorkerMetrics()
    worker = Worker(redis, worker_settings, engine, metrics=metrics)
    serving = asyncio.create_task(worker.run())
    picture = encode_png(shapes.make_scene(random.Random(8), size=(200, 150)).image)
    try:
        for spec in (TaskSpec.build("describe"), TaskSpec.build("answer", question="what?")):
            await queue_client.submit(queue_client.new_job(spec, guild_id=1, user_id=1), picture)
            (result,) = await collect(queue_client, 1)
            assert result.result.ok
        async with asyncio.timeout(10):  # a keep-alive tick samples the engine
            while True:
                got = samples(generate_latest(metrics.registry).decode())
                if got.get(("palicord_feature_cache_lookups_total", (("result", "hit"),))):
                    break
                await asyncio.sleep(0.05)
        assert got[("palicord_feature_cache_lookups_total", (("result", "hit"),))] == 1
        assert got[("palicord_feature_cache_lookups_total", (("result", "miss"),))] == 1
        assert got[("palicord_feature_cache_bytes", ())] > 0
    finally:
        worker.stop()
        await serving
        engine.close()
