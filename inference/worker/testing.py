"""Stand-in engines for tests and benchmarks, shipped with the worker as a test seam (like
httpx's MockTransport); they implement `inference.engine.Engine` without torch:

    NoopEngine     answers "ok" at once (queue benchmarks, queue-only tests)
    SleepEngine    sleeps per batch; can fake GPU out-of-memory, fatal CUDA errors, and a
                   poison input that kills the process (as a crashing native library would)
    Slowed         a real model whose every batch takes at least a given time
    ShapesOracle   really looks at one-shape demo pictures and answers like the demo model

Select one on the command line, e.g.::

    python -m inference.worker --engine inference.worker.testing:sleep_engine \
        --engine-option sleep_s=0.5

A factory takes the WorkerSettings and the `--engine-option` values as keyword strings.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Sequence
from typing import cast

from PIL import Image, ImageChops

from inference.demo.shapes import BACKGROUND, COLORS
from inference.detection import Detection
from inference.display import display_picture
from inference.engine.base import Engine
from inference.intake import load_image
from inference.segmentation import MASK_SIZE, pack_mask
from inference.settings import WorkerSettings
from inference.tasks import InferenceRequest, InferenceResult, Task


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which the worker recognises by name."""


class StandIn:
    """What every stand-in shares: a name, a set of tasks, no warm-up, no device."""

    def __init__(self, model_id: str, capabilities: frozenset[Task] = frozenset(Task)) -> None:
        self._model_id = model_id
        self._capabilities = capabilities

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def capabilities(self) -> frozenset[Task]:
        return self._capabilities

    def warmup(self) -> None:
        return None

    def prepare(self, requests: Sequence[InferenceRequest]) -> list[InferenceRequest]:
        return list(requests)  # nothing to decode ahead

    def device_memory(self) -> dict[str, int]:
        return {}

    def feature_cache(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


class NoopEngine(StandIn):
    """Answers instantly without a model; for queue benchmarks and queue-only tests."""

    def __init__(self, model_id: str = "noop") -> None:
        super().__init__(model_id)

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        return [InferenceResult(task=r.spec.task, text="ok") for r in requests]


class SleepEngine(StandIn):
    """Sleeps `sleep_s` per batch and answers "ok"; can fake GPU errors."""

    def __init__(
        self,
        sleep_s: float = 0.0,
        *,
        model_id: str = "sleep",
        capabilities: frozenset[Task] = frozenset(Task),
        oom_above: int | None = None,
        cuda_error: bool = False,
        mark_path: str | None = None,
        poison: str | None = None,
    ) -> None:
        super().__init__(model_id, capabilities)
        self.sleep_s = sleep_s
        self.oom_above = oom_above  # batches larger than this raise OutOfMemoryError
        self.cuda_error = cuda_error
        self.mark_path = mark_path  # a line per started batch is appended here
        self.poison = poison  # a question that kills the whole process when asked
        self.batches: list[int] = []  # sizes of the batches that ran

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        if self.cuda_error:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.oom_above is not None and len(requests) > self.oom_above:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.poison is not None and any(r.spec.question == self.poison for r in requests):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.mark_path:
            # Tests wait for this line to know a batch is running (no guessing with sleeps).
            with open(self.mark_path, "a", encoding="utf-8") as f:
                f.write(f"{len(requests)}\n")
        time.sleep(self.sleep_s)
        self.batches.append(len(requests))
        return [InferenceResult(task=r.spec.task, text="ok") for r in requests]


def noop_engine(settings: WorkerSettings) -> NoopEngine:
    """The no-op engine (answers instantly)."""
    return NoopEngine()


def sleep_engine(
    settings: WorkerSettings,
    *,
    sleep_s: str = "0",
    capabilities: str = "",
    oom_above: str = "",
    cuda_error: str = "",
    mark_path: str = "",
    poison: str = "",
) -> SleepEngine:
    """A SleepEngine; `capabilities` is a comma-separated task list (default: all)."""
    caps = frozenset(Task(c) for c in capabilities.split(",") if c) or frozenset(Task)
    return SleepEngine(
        float(sleep_s),
        capabilities=caps,
        oom_above=int(oom_above) if oom_above else None,
        cuda_error=cuda_error == "1",
        mark_path=mark_path or None,
        poison=poison or None,
    )


ANALYSE_MAX_PIXELS = 250_000
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


def _analyse_any_size(image: Image.Image) -> tuple[str, str, tuple[int, int, int, int]] | None:
    """`analyse`, on a nearest-neighbour copy of a large picture (its colours stay exact),
    with the box scaled back: looking at every pixel in Python takes seconds per megapixel."""
    step = math.ceil(math.sqrt(image.width * image.height / ANALYSE_MAX_PIXELS))
    if step <= 1:
        return analyse(image)
    small = image.resize((image.width // step, image.height // step), Image.Resampling.NEAREST)
    found = analyse(small)
    if found is None:
        return None
    colour, shape, (x0, y0, x1, y1) = found
    fx, fy = image.width / small.width, image.height / small.height
    return colour, shape, (round(x0 * fx), round(y0 * fy), round(x1 * fx), round(y1 * fy))


def _shape_mask(image: Image.Image, box: tuple[int, int, int, int]) -> str:
    """The shape's true mask in its box, packed as the engine packs a decoded one."""
    inside = image.convert("RGB").crop(box)
    background = Image.new("RGB", inside.size, BACKGROUND)
    differs = ImageChops.difference(inside, background).convert("L")
    binary = differs.point(lambda v: 255 if v > 30 else 0)
    small = binary.resize((MASK_SIZE, MASK_SIZE), Image.Resampling.BILINEAR)
    return pack_mask(small)


class ShapesOracle(StandIn):
    """Really looks at one-shape demo pictures and answers like the demo model would, in
    milliseconds. Its OCR answer is hostile on purpose (mass mentions, markdown, a
    code-fence breakout), so every test that reads text also checks the bot's output safety."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        super().__init__("shapes-oracle")
        self.sleep_s = sleep_s
        self.batches: list[int] = []

    def _one(self, request: InferenceRequest) -> InferenceResult:
        task = request.spec.task
        loaded = load_image(request.image, target_size=None)
        found = _analyse_any_size(loaded.image)
        if task is Task.OCR:
            return InferenceResult(task=task, text=HOSTILE_OCR)
        if found is None:
            return InferenceResult(task=task, text="nothing")
        colour, shape, box = found
        if task is Task.DETECT:
            hits = tuple(
                Detection(label=shape, box=box) for obj in request.spec.objects if obj == shape
            )
            # Like the real engine: the picture to draw on comes back with the boxes.
            display = display_picture(loaded.image, loaded.original_size)
            return InferenceResult(task=task, text="", detections=hits, display=display)
        if task is Task.SEGMENT:
            hits = tuple(
                Detection(shape, box, _shape_mask(loaded.image, box))
                for obj in request.spec.objects
                if obj == shape
            )
            display = display_picture(loaded.image, loaded.original_size)
            return InferenceResult(task=task, text="", detections=hits, display=display)
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


class Slowed:
    """A real engine whose every batch takes at least `batch_s` (the rest of the time
    asleep): a GPU's per-batch cost on a CPU machine, for recovery benchmarks."""

    def __init__(self, inner: Engine, batch_s: float) -> None:
        self._inner = inner
        self.batch_s = batch_s

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def capabilities(self) -> frozenset[Task]:
        return self._inner.capabilities

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        started = time.monotonic()
        out = self._inner.generate(requests)
        time.sleep(max(0.0, self.batch_s - (time.monotonic() - started)))
        return out


def slowed_engine(settings: WorkerSettings, batch_s: str = "1.5") -> Engine:
    """Factory: the configured model (MODEL_ID), each batch padded to `batch_s` seconds."""
    from inference.engine.paligemma import PaliGemmaEngine  # loads torch: only when asked

    return cast("Engine", Slowed(PaliGemmaEngine.from_settings(settings), float(batch_s)))
