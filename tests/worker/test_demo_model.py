"""`python -m inference.worker` running the committed demo model, end to end through Redis."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys

import pytest
from redis.asyncio import Redis

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.detection import iou
from inference.queue import QueueClient
from inference.settings import WorkerSettings
from inference.tasks import InferenceRequest, Task, TaskSpec
from inference.worker import Worker
from inference.worker.testing import SleepEngine
from tests.support.demo import DEMO_MODEL, ROOT, demo_engine, demo_settings
from tests.support.hostile import progressive_jpeg, repeated_scans
from tests.support.queue import REDIS_URL, collect

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


async def burst_of_the_demo_worker(prefix: str, **env: str) -> None:
    """`python -m inference.worker --burst` on the demo model until the queue is empty, on
    the device the in-process checks use; `env` adds settings."""
    full_env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "MODEL_ID": str(DEMO_MODEL),
        "DEVICE": demo_settings().device or "cpu",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "inference.worker", "--burst", "--log-level", "WARNING"],
        env=full_env,
        cwd=ROOT,
        timeout=180,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


async def test_the_worker_serves_the_demo_model_through_the_queue(
    queue_client: QueueClient, redis_prefix: str
) -> None:
    rng = random.Random(4242)
    scene = shapes.make_scene(rng, size=(280, 200), min_shapes=2, max_shapes=2)
    target = scene.shapes[0]
    image = encode_png(scene.image)
    specs = {
        "caption": TaskSpec.build("caption"),
        "colour": TaskSpec.build("answer", question=f"what color is the {target.kind}?"),
        "detect": TaskSpec.build("detect", objects=target.kind),
    }
    submitted = {}
    for name, spec in specs.items():
        job = queue_client.new_job(spec, guild_id="g1", user_id=name, context={"name": name})
        submitted[name] = (await queue_client.submit(job, image)).job_id
    bad = queue_client.new_job(TaskSpec.build("caption"), guild_id="g2", user_id="u")
    await queue_client.submit(bad, b"\x89PNG\r\n\x1a\n truncated")

    await burst_of_the_demo_worker(redis_prefix)
    by_name = {
        d.result.context.get("name", "bad"): d.result for d in await collect(queue_client, 4)
    }
    assert {by_name[n].job_id for n in specs} == set(submitted.values())
    # Caption quality is measured in test_demo_quality; here the worker's caption must be
    # exactly what the same model gives in-process, so it came from the real model.
    direct = demo_engine().generate([InferenceRequest(specs["caption"], image)])[0]
    assert by_name["caption"].text == direct.text
    assert by_name["colour"].text == target.color
    boxes = [d.box for d in by_name["detect"].detections if d.label == target.kind]
    assert boxes and max(iou(b, target.box) for b in boxes) >= 0.5
    assert not by_name["bad"].ok and by_name["bad"].error == "image_corrupt"


async def test_workers_of_different_models_share_one_queue(
    redis: Redis, queue_client: QueueClient, worker_settings: WorkerSettings
) -> None:
    # Two GPU hosts, two checkpoints: the demo model does everything, a stand-in reads text
    # only. Each job goes to a worker that can do its task, and both serve the one queue.
    scene = shapes.make_scene(random.Random(77), size=(160, 160), min_shapes=1, max_shapes=1)
    image = encode_png(scene.image)
    captions = []
    for i in range(4):
        job = queue_client.new_job(TaskSpec.build("caption"), guild_id="g", user_id=f"c{i}")
        captions.append((await queue_client.submit(job, image)).job_id)
    for i in range(4):
        job = queue_client.new_job(TaskSpec.build("ocr"), guild_id="g", user_id=f"o{i}")
        await queue_client.submit(job, image)
    reader = SleepEngine(0.2, model_id="ocr-stand-in", capabilities=frozenset({Task.OCR}))
    demo = Worker(redis, worker_settings, demo_engine(), worker_id="demo-host")
    ocr = Worker(redis, worker_settings, reader, worker_id="ocr-host")
    running = [asyncio.create_task(ocr.run(burst=True))]
    async with asyncio.timeout(10):  # the reader has taken the text jobs it can do
        while not await redis.hlen(queue_client.keys.lease_owner):  # type: ignore[misc]  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    running.append(asyncio.create_task(demo.run(burst=True)))
    async with asyncio.timeout(10):
        while len(models := {w.model_id for w in await queue_client.workers()}) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert models == {str(DEMO_MODEL), "ocr-stand-in"}
    await asyncio.gather(*running)
    results = {d.result.job_id: d.result for d in await collect(queue_client, 8)}
    assert all(results[j].worker_id == "demo-host" and results[j].ok for j in captions)
    by_reader = [r for r in results.values() if r.worker_id == "ocr-host"]
    assert by_reader and all(r.task is Task.OCR for r in by_reader)


async def test_a_decode_bomb_is_refused_within_its_budget_and_its_batch_answered(
    queue_client: QueueClient, redis_prefix: str
) -> None:
    """Issue 19's decode bomb, kept under the structural scan cap (63 scans, ~2 s to decode
    here) so that only the time budget can stop it: it gets its own refusal, and the other
    requests of its batch are answered. Before the budget, the batch waited for it."""
    bomb = repeated_scans(progressive_jpeg((6000, 6000)), 53)
    rng = random.Random(99)
    scenes = [shapes.make_scene(rng, size=(200, 160), min_shapes=1, max_shapes=1) for _ in range(3)]
    kinds = [scenes[0].shapes[0].kind] + [s.shapes[0].kind for s in scenes]
    pictures = [bomb, *(encode_png(s.image) for s in scenes)]
    for i, (kind, picture) in enumerate(zip(kinds, pictures, strict=True)):
        spec = TaskSpec.build("answer", question=f"what color is the {kind}?")
        job = queue_client.new_job(spec, guild_id=f"g{i}", user_id="u", context={"i": str(i)})
        await queue_client.submit(job, picture)
    await burst_of_the_demo_worker(redis_prefix, DECODE_TIMEOUT_S="0.5", PREPARE_PROCESSES="2")
    results = {d.result.context["i"]: d.result for d in await collect(queue_client, 4)}
    assert not results["0"].ok and results["0"].error == "image_too_slow"
    assert "takes too long to read" in (results["0"].message or "")
    for i, scene in enumerate(scenes, start=1):
        assert results[str(i)].ok and results[str(i)].text == scene.shapes[0].color
