"""A model stand-in for bot tests: it really looks at synthetic shape images (one shape on
the demo background) and answers like the demo model would, in milliseconds.

Its OCR answer is hostile on purpose (mass mentions, markdown, a code-fence breakout), so
every test that reads text also checks the bot's output safety. Select it in a worker
subprocess with `--engine tests.discord_server.shapes_engine:oracle_engine`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from PIL import Image

from inference.demo.shapes import BACKGROUND, COLORS
from inference.detection import Detection
from inference.intake import load_image
from inference.queue_settings import WorkerSettings
from inference.tasks import InferenceRequest, InferenceResult, Task

HOSTILE_OCR = "@everyone look <@123456789012345678> **loud** ``` [x](https://evil.example) @here"
_TOLERANCE = 40


def _is_background(px: tuple[int, ...]) -> bool:
    return all(abs(a - b) <= _TOLERANCE for a, b in zip(px, BACKGROUND, strict=True))


def analyse(image: Image.Image) -> tuple[str, str, tuple[int, int, int, int]] | None:
    """(colour, shape, box) of the one shape in the picture, or None if blank."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.load()
    assert pixels is not None
    xs: list[int] = []
    ys: list[int] = []
    sums = [0, 0, 0]
    for y in range(height):
        for x in range(width):
            px = pixels[x, y]
            assert isinstance(px, tuple)
            if not _is_background(px):
                xs.append(x)
                ys.append(y)
                for i in range(3):
                    sums[i] += px[i]
    if not xs:
        return None
    n = len(xs)
    mean = tuple(s / n for s in sums)
    colour = min(
        COLORS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLORS[c], mean, strict=True))
    )
    box = (min(xs), min(ys), max(xs) + 1, max(ys) + 1)
    fill = n / ((box[2] - box[0]) * (box[3] - box[1]))
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    return colour, shape, box


class ShapesOracle:
    """Implements inference.engine_api.Engine."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s
        self.batches: list[int] = []

    @property
    def model_id(self) -> str:
        return "shapes-oracle"

    @property
    def capabilities(self) -> frozenset[Task]:
        return frozenset(Task)

    def warmup(self) -> None:
        return None

    def _one(self, request: InferenceRequest) -> InferenceResult:
        task = request.spec.task
        loaded = load_image(request.image, target_size=None)
        found = analyse(loaded.image)
        if task is Task.OCR:
            return InferenceResult(task=task, text=HOSTILE_OCR)
        if found is None:
            return InferenceResult(task=task, text="nothing")
        colour, shape, box = found
        if task is Task.DETECT:
            hits = tuple(
                Detection(label=shape, box=box) for obj in request.spec.objects if obj == shape
            )
            return InferenceResult(task=task, text="", detections=hits)
        if task is Task.ANSWER:
            return InferenceResult(task=task, text=colour)
        if task is Task.DESCRIBE:
            return InferenceResult(task=task, text=f"a picture of one {colour} {shape}.")
        return InferenceResult(task=task, text=f"a {colour} {shape} ({request.spec.language})")

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.batches.append(len(requests))
        return [self._one(r) for r in requests]


def oracle_engine(settings: WorkerSettings, sleep_s: str = "0") -> ShapesOracle:
    """Factory for `python -m inference.worker --engine ...:oracle_engine`."""
    return ShapesOracle(float(sleep_s))
