"""The bot keeps no picture in memory and never downloads a picture it already holds: a
/detect result without the worker's display copy (an older worker) is drawn on the copy
kept in Redis for follow-ups, and with that copy gone too it is still answered, with its
boxes and a note, without asking the CDN again (the real bot, the local
Discord-compatible server, real Redis and an in-process worker)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
from collections.abc import Sequence

from PIL import Image
from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.annotate import label_color
from inference.demo.shapes import BACKGROUND, COLORS
from inference.detection import iou
from inference.display import DISPLAY_MAX_SIDE_PX
from inference.queue import Keys
from inference.queue.memory import PICTURE, picture_digest
from inference.tasks import InferenceRequest, InferenceResult
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, boxes
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)

GATE_S = 10.0


class OlderWorkerEngine(ShapesOracle):
    """Answers like a worker from before issue 19: boxes, but no display copy. Each batch
    waits for `go` (set from the start unless told otherwise)."""

    def __init__(self, *, held: bool = False) -> None:
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()
        if not held:
            self.go.set()

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        self.started.set()
        assert self.go.wait(GATE_S), "the test never let the batch go"
        return [dataclasses.replace(r, display=None) for r in super().generate(requests)]


def cdn_fetches(server: DiscordServer) -> int:
    return len(server.recorder.matching(lambda r: r.route == "/cdn"))


def square_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    image = Image.new("RGB", size, BACKGROUND)
    image.paste(COLORS["red"], box)
    return png_bytes(image, compress_level=9)


async def test_a_result_without_a_display_copy_is_drawn_on_the_kept_picture(
    server: DiscordServer, prefix: str
) -> None:
    # The bot restarts while the job runs, so nothing of the picture survives in its
    # memory. Before issue 20 it kept queued /detect pictures in memory (ImageCache) for
    # this and, on a miss like this one, downloaded the picture from Discord again.
    # Larger than the display size: the kept upload is reduced before it is drawn on.
    box = (600, 600, 1200, 1200)
    data = square_png((2400, 1800), box)
    engine = OlderWorkerEngine(held=True)
    settings = bot_settings(server, prefix, instance_id="bot-kept")
    async with running_worker(worker_settings(prefix), engine):
        async with running_bot(settings):
            image = server.attachment(data, "old.png")
            state = await server.slash(
                "detect", user=server.user("ivy"), attachments={"image": image}, objects="square"
            )
            assert await _wait(engine.started), "the job never reached the worker"
        async with running_bot(settings):
            engine.go.set()
            answer = await answer_for(server, state, timeout_s=20)
    assert cdn_fetches(server) == 1, "the picture was downloaded again to draw on"
    [found] = boxes(answer)
    assert iou(found["box"], box) >= 0.9
    pictures = [f for f in answer.files if not f.filename.endswith(".json")]
    assert [f.filename for f in pictures] == ["detections-1.png"]
    drawn = Image.open(io.BytesIO(pictures[0].data)).convert("RGB")
    assert drawn.size == (DISPLAY_MAX_SIDE_PX, 1200)
    # The outline, scaled to the reduced copy: just inside (400, 400)-(800, 800).
    edge = drawn.getpixel((600, 403))
    assert isinstance(edge, tuple)
    assert sum(abs(a - b) for a, b in zip(edge, label_color("square"), strict=True)) < 60
    assert "no longer kept" not in answer.text


async def test_with_the_kept_picture_gone_too_the_boxes_still_come_without_a_download(
    server: DiscordServer, bot: PalicordBot, prefix: str
) -> None:
    box = (100, 80, 220, 200)
    data = square_png((320, 240), box)
    engine = OlderWorkerEngine(held=True)
    async with running_worker(worker_settings(prefix), engine):
        image = server.attachment(data, "gone.png")
        state = await server.slash(
            "detect", user=server.user("jo"), attachments={"image": image}, objects="square"
        )
        assert await _wait(engine.started), "the job never reached the worker"
        redis = Redis.from_url(REDIS_URL)
        async with redis:  # expired, or dropped for space, while the job ran
            assert await redis.delete(Keys(prefix).stash(PICTURE, picture_digest(data))) == 1
        engine.go.set()
        answer = await answer_for(server, state, timeout_s=20)
    assert cdn_fetches(server) == 1, "the picture was downloaded again"
    [found] = boxes(answer)
    assert iou(found["box"], box) >= 0.9
    assert [f.filename for f in answer.files] == ["boxes-1.json"]
    assert "square × 1" in answer.text
    assert "no longer kept here" in answer.text and "boxes-1.json" in answer.text


async def _wait(event: threading.Event) -> bool:
    """Wait for a thread's `event` without blocking the event loop."""
    return await asyncio.to_thread(event.wait, GATE_S)
