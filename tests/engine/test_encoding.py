"""The preparing processes: the same encodings as in-process, a bad picture's own error,
a dead child survived, and no child outliving the worker."""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.encoding import UNREADABLE, Encoded, EncodeSpec, PreparePool
from inference.engine.inputs import spec_from_processor
from inference.errors import CorruptImage, ImageTooLarge, ImageTooSlow, PalicordError
from inference.queue.memory import picture_digest
from tests.support.demo import demo_engine
from tests.support.hostile import progressive_jpeg, repeated_scans

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spec(max_image_bytes: int = 200_000, max_image_pixels: int = 4_000_000) -> EncodeSpec:
    engine = demo_engine()
    return spec_from_processor(
        engine._loaded.processor,
        target_size=engine.image_size,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
    )


def _items(n: int) -> list[tuple[bytes, str]]:
    rng = random.Random(17)
    prompts = ["caption en", "answer en what color is the circle?", "detect square ; circle"]
    return [
        (
            encode_png(shapes.make_scene(rng, size=(rng.randint(120, 400), 150)).image),
            prompts[i % 3],
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def pool() -> Iterator[PreparePool]:
    started = PreparePool(_spec(), processes=2)
    started.start()
    yield started
    started.close()


def _same(a: Encoded | PalicordError, b: Encoded | PalicordError) -> bool:
    if isinstance(a, PalicordError) or isinstance(b, PalicordError):
        return type(a) is type(b) and str(a) == str(b)
    return (
        np.array_equal(a.input_ids, b.input_ids)
        and np.array_equal(a.pixels, b.pixels)
        and a.original_size == b.original_size
        and a.digest == b.digest
    )


def test_processes_encode_exactly_as_the_calling_process(pool: PreparePool) -> None:
    items = _items(7)
    remote = pool.encode(items)
    local = [pool.local.encode(*item) for item in items]
    assert all(_same(r, loc) for r, loc in zip(remote, local, strict=True))
    first = remote[0]
    assert isinstance(first, Encoded)
    assert first.pixels.shape == (112, 112, 3) and first.pixels.dtype == np.uint8
    assert first.digest == picture_digest(items[0][0])  # the bot's picture id


def test_a_bad_picture_comes_back_as_its_own_error(pool: PreparePool) -> None:
    good = _items(2)
    cut = good[0][0][: len(good[0][0]) // 2]
    huge = b"\x89PNG\r\n\x1a\n" + b"\0" * 200_001
    results = pool.encode([good[0], (cut, "ocr"), (huge, "ocr"), good[1]])
    assert isinstance(results[1], CorruptImage) and "incomplete" in str(results[1])
    assert isinstance(results[2], ImageTooLarge)
    assert isinstance(results[0], Encoded) and isinstance(results[3], Encoded)


def test_a_detect_request_carries_an_upright_display_copy(pool: PreparePool) -> None:
    # Stored 2400 x 1600 with a red stored top-left corner, EXIF orientation 6: upright
    # 1600 x 2400, red in the top-right corner. Made in the preparing process, so the
    # copy crosses the process boundary too; other tasks get none.
    image = Image.new("RGB", (2400, 1600), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80, exif=exif.tobytes())
    detect, caption = pool.encode(
        [(out.getvalue(), "detect square"), (out.getvalue(), "caption en")]
    )
    assert isinstance(detect, Encoded) and isinstance(caption, Encoded)
    assert caption.display is None
    assert detect.display is not None
    assert detect.display.original_size == detect.original_size == (1600, 2400)
    picture = detect.display.open()
    assert picture.size == (1067, 1600)
    corner = picture.getpixel((picture.width - 5, 5))
    assert isinstance(corner, tuple) and corner[0] > 200 and corner[1] < 60
    assert np.array_equal(detect.pixels, caption.pixels)  # the model sees the same


def test_a_dead_child_costs_no_request_and_the_pool_comes_back() -> None:
    pool = PreparePool(_spec(), processes=1)
    try:
        pool.start()
        (pid,) = pool.pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        items = _items(3)
        expected = [pool.local.encode(*item) for item in items]
        assert all(_same(a, b) for a, b in zip(pool.encode(items), expected, strict=True))
        again = pool.encode(items)  # a fresh process
        assert len(pool.pids()) == 1 and pool.pids() != [pid]
        assert all(_same(a, b) for a, b in zip(again, expected, strict=True))
    finally:
        pool.close()


def test_pictures_that_keep_killing_their_process_are_refused_and_the_pool_recovers() -> None:
    """Each preparing process dies as soon as it starts (as a decoder crash would kill
    it): every request still gets an answer, a clear refusal, and the worker goes on."""
    pool = PreparePool(_spec(), processes=1)
    stop = threading.Event()

    def kill_every_child() -> None:
        while not stop.is_set():
            for pid in pool.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)

    killer = threading.Thread(target=kill_every_child)
    killer.start()
    items = _items(3)
    try:
        refused = pool.encode(items)
    finally:
        stop.set()
        killer.join()
    try:
        assert all(isinstance(r, CorruptImage) and r.message == UNREADABLE for r in refused)
        expected = [pool.local.encode(*item) for item in items]
        assert all(_same(a, b) for a, b in zip(pool.encode(items), expected, strict=True))
    finally:
        pool.close()


def test_a_picture_over_its_budget_is_refused_while_its_neighbours_are_prepared() -> None:
    """A 36-megapixel progressive JPEG with 63 scans passes the structural caps and takes
    ~2 s to decode here; with a 0.5 s budget it is refused and its process replaced, while
    the other process prepares the batch's other pictures. Fails on the executor-based
    pool this replaced, which had no budget."""
    bomb = repeated_scans(progressive_jpeg((6000, 6000)), 53)
    pool = PreparePool(
        _spec(max_image_bytes=2_000_000, max_image_pixels=40_000_000),
        processes=2,
        decode_timeout_s=0.5,
    )
    try:
        pool.start()
        before = set(pool.pids())
        good = _items(4)
        results = pool.encode([good[0], (bomb, "caption en"), *good[1:]])
        assert isinstance(results[1], ImageTooSlow)
        assert "takes too long to read (over 0.5 s)" in results[1].message
        assert all(isinstance(r, Encoded) for i, r in enumerate(results) if i != 1)
        assert len(pool.pids()) == 2 and len(before & set(pool.pids())) <= 1  # one replaced
        again = pool.encode(good)
        assert all(_same(a, pool.local.encode(*b)) for a, b in zip(again, good, strict=True))
    finally:
        pool.close()


CHILD_PROGRAM = """
import sys, time
from tests.engine.test_encoding import _spec
from inference.engine.encoding import PreparePool
pool = PreparePool(_spec(), processes=2)
pool.start()
print(" ".join(str(p) for p in pool.pids()), flush=True)
time.sleep(60)
"""


def test_preparing_processes_die_with_a_killed_worker() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_PROGRAM], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        children = [int(p) for p in proc.stdout.readline().split()]
        assert len(children) == 2 and all(_alive(p) for p in children)
    finally:
        proc.kill()  # SIGKILL: no cleanup runs in the parent
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in children)


def test_without_processes_everything_runs_in_the_calling_thread() -> None:
    pool = PreparePool(_spec(), processes=0)
    items = _items(2)
    assert all(isinstance(r, Encoded) for r in pool.encode(items))
    assert pool.pids() == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
