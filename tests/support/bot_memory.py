"""The bot's peak memory for answering a large /detect, measured in a fresh process.

The upload and the result the worker publishes for it are made here (the worker's side),
written to files, and a child Python process plays the bot: it imports the bot, reads
them, restarts its peak resident set size from what is resident now (Linux's
`/proc/self/clear_refs`; elsewhere `ru_maxrss`, which can only hide a rise smaller than
what importing cost), decodes the result and composes the answer exactly as
`bot.delivery` does, and reports how far its peak rose. A fresh process, because a test
process's peak says nothing after earlier tests have raised it.

Paths (the child's `how`):
    display   the result carries the worker's display copy (this version)
    fallback  a result from an older worker (no copy): the bot has only the upload, as
              kept in Redis for follow-ups
    full      the composition before issue 19: the upload decoded in full, then drawn

Used by tests/bot/test_answer.py and by the benchmarks::

    from tests.support.bot_memory import detect_peak_increase_mb
    detect_peak_increase_mb(7900, 5000, how="display")   # MB, about 40 megapixels
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from inference.detection import Detection
from inference.display import load_with_display
from inference.queue.messages import JobResult
from inference.tasks import Task

ROOT = Path(__file__).resolve().parents[2]
MODEL_SIDE = 448  # the demo model's input side; only the display copy matters here

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from bot.answer import ItemAnswer, compose
from inference.annotate import annotate
from inference.intake import load_image
from inference.queue.messages import JobResult

def status_kb(name):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])


def peak_kb():
    return status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


folder, how = Path(sys.argv[1]), sys.argv[2]
raw, upload = (folder / "result.json").read_bytes(), (folder / "upload.png").read_bytes()
try:  # Linux: start the high-water mark afresh from what is resident now
    Path("/proc/self/clear_refs").write_text("5")
    before_kb = status_kb("VmRSS")
except OSError:
    before_kb = peak_kb()
started = time.perf_counter()
if how == "full":
    result = JobResult.from_json(raw)
    drawn = annotate(load_image(upload).image, result.detections)
    files = [len(drawn.data)]
else:
    result = JobResult.from_json(raw)
    item = ItemAnswer("big.png", result, image=upload if how == "fallback" else None)
    answer = compose([item], max_file_bytes=10 * 1024 * 1024)
    files = [len(f.data) for f in answer.files if not f.filename.endswith(".json")]
    print(answer.embeds[0].description, file=sys.stderr)
seconds = time.perf_counter() - started
after_kb = peak_kb()
print(json.dumps({"increase_kb": after_kb - before_kb, "seconds": seconds, "pictures": files}))
"""


def big_upload(width: int, height: int) -> tuple[bytes, Detection]:
    """A flat RGBA PNG with one square (a few hundred KB however many pixels: a small
    download, a large decode), and the square's box."""
    image = Image.new("RGBA", (width, height), (235, 235, 235, 255))
    box = (width // 4, height // 4, width // 2, height // 2)
    ImageDraw.Draw(image).rectangle(
        (box[0], box[1], box[2] - 1, box[3] - 1), fill=(200, 30, 30, 255)
    )
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue(), Detection("square", box)


def detect_result(upload: bytes, detection: Detection, *, with_display: bool) -> JobResult:
    """The result a worker publishes for a /detect of `upload`."""
    display = None
    if with_display:
        _, display = load_with_display(upload, target_size=MODEL_SIDE)
    return JobResult(
        job_id="j",
        context={},
        task=Task.DETECT,
        detections=(detection,),
        display=display,
        finished_at=1.0,
    )


@dataclass(frozen=True, slots=True)
class Measured:
    """What the child process reports."""

    increase_mb: float  # how far the peak resident set rose, in MB (10^6 bytes)
    seconds: float  # decoding the result and composing the answer
    pictures: list[int]  # the bytes of each picture attached to the answer
    note: str  # the answer's text (legend, and why there is no picture if there is none)


def measure(upload: bytes, result: JobResult, how: str) -> Measured:
    """Run the bot's side of answering `result` in a child process (see the module doc)."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "upload.png").write_bytes(upload)
        (Path(folder) / "result.json").write_text(result.to_json())
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, folder, how],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(out["increase_kb"] * 1024 / 1e6, out["seconds"], out["pictures"], done.stderr)


def detect_peak_increase_mb(
    width: int = 7900, height: int = 5000, *, how: str = "display"
) -> float:
    """How far the bot's peak memory rises answering a /detect of a `width` x `height`
    PNG, in MB (10^6 bytes), by path (see the module docstring)."""
    upload, detection = big_upload(width, height)
    result = detect_result(upload, detection, with_display=how == "display")
    return measure(upload, result, how).increase_mb
