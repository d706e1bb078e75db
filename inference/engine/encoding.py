"""A request's CPU work (decode, reduce, square resize, tokenise), in processes of its own.

Torch-free on purpose: `PreparePool` runs `encode` in `PREPARE_PROCESSES` spawned
processes that import only Pillow, NumPy and tokenizers. Measured on the CPU with the demo
model: the same preparation in a thread of the worker slowed the generate loop beside it
by 10-30%, because both hold the GIL for most of their Python (the convoy effect: each
time generation releases the GIL for a kernel, the preparing thread takes it for up to
the 5 ms switch interval); in a process of its own it slowed generation by nothing
measurable. Next to a GPU the same holds: generation is a Python loop launching kernels.

What crosses the process boundary is small: the picture's bytes in, the prompt's token
ids and the picture as 8-bit RGB at the model's side out (448 px: 0.6 MB). Normalising
to floats happens on the device (`inputs.Normaliser`), where it costs nothing and the
copy is a quarter of the size.

Each process is handed one picture at a time, with a wall-clock budget
(`DECODE_TIMEOUT_S`): a picture over it is refused and its process killed and replaced,
while the other processes go on with the batch's other pictures. A child that dies (a
decoder crash, the OOM killer) costs only the picture it held, which is tried once more
in another process and refused with a clear error if it kills that one too, so a
hostile file can never take the worker down with it, nor hold its batch for longer
than the budget. With `PREPARE_PROCESSES=0`, everything runs in the calling thread,
which cannot be stopped: only the structural caps (`inference.structure`) apply there.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import multiprocessing
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from inference.display import DisplayPicture, load_with_display
from inference.errors import CorruptImage, ImageTooSlow, PalicordError
from inference.intake import load_image
from inference.queue.memory import picture_digest
from inference.tasks import Task

log = logging.getLogger(__name__)

UNREADABLE = "That picture could not be read (it stopped the decoder). Try another file."


@dataclass(frozen=True, slots=True)
class EncodeSpec:
    """Everything a preparing process needs, small and picklable."""

    tokenizer_json: str  # the checkpoint's tokenizer, serialised
    prefix: str  # the image placeholders and <bos>: the only control tokens a prompt gets
    add_special_tokens: bool  # whether the processor lets the tokenizer add its own
    side: tuple[int, int] | None  # (width, height) the processor resizes to; None: no resize
    resample: int  # PIL's filter number, from the processor config
    target_size: int  # load_image reduces large pictures towards this first
    max_image_bytes: int
    max_image_pixels: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """One request ready for the device but for normalising."""

    input_ids: np.ndarray  # int64 (prompt tokens,)
    pixels: np.ndarray  # uint8 (height, width, 3)
    original_size: tuple[int, int]
    digest: str  # the picture's id, as the bot's picture store names it
    display: DisplayPicture | None = None  # for tasks that draw their answer on the picture


def text_only(tokenizer_json: str) -> Tokenizer:
    """The tokenizer with none of its added tokens matched in the text it encodes.

    The processor's tokenizer turns `<image>`, `<bos>`, `<eos>`, `<locNNNN>`, `<segNNN>`...
    typed in a question into the model's control tokens (an extra `<image>` fails the whole
    batch: "Image features and image tokens do not match"). `encode_special_tokens` stops
    that only for tokens marked special, and a checkpoint's loc/seg tokens are not, so every
    added token is marked special here first. Text without added tokens is split at exactly
    the same places as before: they only ever cut a text into segments tokenised alone.
    """
    config = json.loads(tokenizer_json)
    for token in config.get("added_tokens", []):
        token["special"] = True
    tokenizer = Tokenizer.from_str(json.dumps(config))
    tokenizer.encode_special_tokens = True
    return tokenizer


class Encoding:
    """`EncodeSpec` made ready once per process: the prompt's fixed ids and a tokenizer
    that reads the rest as text."""

    def __init__(self, spec: EncodeSpec) -> None:
        self.spec = spec
        tokenizer = Tokenizer.from_str(spec.tokenizer_json)
        # The control tokens a prompt gets are fixed: the same ids for every request.
        head = tokenizer.encode(spec.prefix, add_special_tokens=spec.add_special_tokens)
        self._head = list(head.ids)
        self._tail = list(tokenizer.encode("\n", add_special_tokens=False).ids)
        self._text = text_only(spec.tokenizer_json)
        # A multi-character added token a text tokenizer still builds (merges leading to
        # it) is replaced by its characters, tokenised one by one: none can come back.
        self._spelled = {
            token_id: [i for char in token.content for i in self._text.encode(char).ids]
            for token_id, token in tokenizer.get_added_tokens_decoder().items()
            if len(token.content) > 1
        }

    def encode(self, image: bytes, prompt: str) -> Encoded | PalicordError:
        """The request's token ids and square RGB picture, and the display copy when its
        answer is drawn on the picture; a bad picture is its error."""
        spec = self.spec
        limits = {"max_bytes": spec.max_image_bytes, "max_pixels": spec.max_image_pixels}
        display = None
        try:
            if _draws(prompt):
                loaded, display = load_with_display(image, **limits, target_size=spec.target_size)
            else:
                loaded = load_image(image, **limits, target_size=spec.target_size)
        except PalicordError as exc:
            return exc
        return Encoded(
            input_ids=self.token_ids(prompt),
            pixels=self.square(loaded.image),
            original_size=loaded.original_size,
            digest=picture_digest(image),
            display=display,
        )

    def token_ids(self, prompt: str) -> np.ndarray:
        """The prompt as PaliGemma's processor expands it: placeholders, <bos>, prompt, \\n;
        the prompt read as text, whatever tokens of the model's it spells."""
        return np.asarray(self._head + self.text_ids(prompt) + self._tail, dtype=np.int64)

    def text_ids(self, text: str) -> list[int]:
        """`text` tokenised as plain text: no added token spelled in it becomes its token."""
        ids = self._text.encode(text, add_special_tokens=False).ids
        return [j for i in ids for j in self._spelled.get(i, (i,))]

    def square(self, image: Image.Image) -> np.ndarray:
        """The picture resized as the processor resizes it, as 8-bit RGB."""
        if self.spec.side is not None:
            image = image.resize(self.spec.side, Image.Resampling(self.spec.resample))
        return np.array(image.convert("RGB"))  # a writable copy: torch refuses read-only


def _draws(prompt: str) -> bool:
    # A prompt starts with its task's name (`TaskSpec.prompt`): PaliGemma answers with
    # boxes only after its fixed "detect"/"segment" prefixes.
    name = prompt.split(" ", 1)[0]
    return name in Task.__members__.values() and Task(name).draws


_READY = "ready"
# A child that has not finished importing after this long is stuck, not slow.
START_TIMEOUT_S = 60.0


def _child_main(conn: Connection, spec: EncodeSpec) -> None:
    """A preparing process: encode each (picture, prompt) it is sent, until told to stop."""
    if sys.platform.startswith("linux"):
        # Exit with the worker, even when it is killed outright (SIGKILL from a supervisor).
        # Linux sends it when the thread that started the process ends: the first children
        # start on the worker's engine thread, which lives as long as the worker; one that
        # dies with a shorter-lived thread is replaced like any other dead child.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    encoding = Encoding(spec)
    conn.send(_READY)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        try:
            result: Encoded | PalicordError = encoding.encode(*item)
        except Exception:  # a decoder bug must cost the picture, not the process
            log.exception("preparing a picture failed unexpectedly")
            result = CorruptImage()
        conn.send(result)


@dataclass(slots=True)
class _Child:
    """One preparing process and the picture it holds, if any."""

    process: BaseProcess
    conn: Connection
    started_at: float
    ready: bool = False
    job: int | None = None  # index of the picture it was given
    deadline: float | None = None  # when the picture's budget runs out


class PreparePool:
    """Encodes requests in `processes` spawned processes (0: in the calling thread), one
    picture at a time per process, each within `decode_timeout_s` (None: no budget).

    A picture over its budget is refused (`ImageTooSlow`) and its process killed and
    replaced while the other processes go on with the batch's other pictures; a picture
    whose process dies is tried once more in another one, and refused if it kills that
    too. Either way a hostile file costs only its own request and at most its budget.
    """

    def __init__(
        self, spec: EncodeSpec, processes: int, decode_timeout_s: float | None = None
    ) -> None:
        self._local = Encoding(spec)
        self._spec = spec
        self._processes = processes
        self._timeout_s = decode_timeout_s or None
        self._children: list[_Child] = []
        self._context = multiprocessing.get_context("spawn")

    @property
    def local(self) -> Encoding:
        """The calling process's own encoding (the engine's checks and the CLI use it)."""
        return self._local

    def pids(self) -> list[int]:
        """The preparing processes' ids (for tests and operators)."""
        return [c.process.pid for c in self._children if c.process.pid is not None]

    def encode(self, items: Sequence[tuple[bytes, str]]) -> list[Encoded | PalicordError]:
        """Each (picture bytes, prompt) encoded, in order."""
        if self._processes == 0 or not items:
            return [self._local.encode(*item) for item in items]
        return _Round(self, items).run()

    def start(self) -> None:
        """Start the processes now (they take ~1 s to import) rather than on first use."""
        if not self._processes:
            return
        self._fill()
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = [c for c in self._children if not c.ready]
        while waiting and time.monotonic() < deadline:
            for conn in wait([c.conn for c in waiting], deadline - time.monotonic()):
                child = next(c for c in waiting if c.conn is conn)
                try:
                    child.ready = child.conn.recv() == _READY
                except (EOFError, OSError):
                    self._discard(child)
                waiting.remove(child)

    def close(self) -> None:
        """Stop the processes, asking first and killing any that do not stop."""
        children, self._children = self._children, []
        for child in children:
            with contextlib.suppress(OSError):
                child.conn.send(None)
        for child in children:
            child.process.join(timeout=2)
            self._discard(child)

    def _fill(self) -> None:
        while len(self._children) < self._processes:
            ours, theirs = self._context.Pipe()
            # spawn, not fork: the worker holds CUDA state, OpenMP teams and threads,
            # none of which survive a fork safely.
            process = self._context.Process(
                target=_child_main,
                args=(theirs, self._spec),
                name="palicord-prepare",
                daemon=True,
            )
            process.start()
            theirs.close()
            self._children.append(_Child(process, ours, time.monotonic()))

    def _discard(self, child: _Child) -> None:
        """Kill (if need be) and forget a child."""
        if child in self._children:
            self._children.remove(child)
        if child.process.is_alive():
            child.process.kill()
            child.process.join(timeout=5)
        child.conn.close()


class _Round:
    """One `encode` call: hands pictures to idle processes until each has its result."""

    def __init__(self, pool: PreparePool, items: Sequence[tuple[bytes, str]]) -> None:
        self.pool = pool
        self.items = items
        self.results: list[Encoded | PalicordError | None] = [None] * len(items)
        self.pending = deque(range(len(items)))
        self.strikes = [0] * len(items)
        self.left = len(items)

    def run(self) -> list[Encoded | PalicordError]:
        pool = self.pool
        while self.left:
            pool._fill()
            for child in pool._children:
                if child.job is None and self.pending:
                    # Given now, sent once the child is ready: a child that dies before
                    # reading it still counts against the picture it was to prepare.
                    child.job = self.pending.popleft()
                    if child.ready:
                        self._send(child)
            waits = [c.conn for c in pool._children] + [c.process.sentinel for c in pool._children]
            woke = set(wait(waits, self._next_deadline()))
            now = time.monotonic()
            for child in list(pool._children):
                if child.conn in woke or child.process.sentinel in woke:
                    self._hear(child)
                elif child.deadline is not None and now >= child.deadline:
                    self._too_slow(child)
                elif not child.ready and now - child.started_at > START_TIMEOUT_S:
                    self._lost(child)
        pool._fill()  # replacements start importing while this batch generates
        return [r for r in self.results if r is not None]

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        times = [c.deadline for c in self.pool._children if c.deadline is not None]
        times += [c.started_at + START_TIMEOUT_S for c in self.pool._children if not c.ready]
        return max(0.0, min(times) - now) if times else None

    def _send(self, child: _Child) -> None:
        assert child.job is not None
        try:
            child.conn.send(self.items[child.job])
        except OSError:  # it died meanwhile; its sentinel says so next round
            return
        timeout_s = self.pool._timeout_s
        child.deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def _hear(self, child: _Child) -> None:
        try:
            message = child.conn.recv() if child.conn.poll() else None
        except (EOFError, OSError):
            message = None
        if message is None:
            self._lost(child)
        elif message == _READY:
            child.ready = True
            if child.job is not None:
                self._send(child)
        elif child.job is not None and isinstance(message, Encoded | PalicordError):
            self._settle(child.job, message)
            child.job = child.deadline = None

    def _settle(self, index: int, result: Encoded | PalicordError) -> None:
        self.results[index] = result
        self.left -= 1

    def _too_slow(self, child: _Child) -> None:
        assert child.job is not None
        log.warning("a picture took over %.1f s to prepare; refusing it", self.pool._timeout_s)
        self._settle(
            child.job,
            ImageTooSlow(
                f"This picture takes too long to read (over {self.pool._timeout_s:g} s). "
                "Save it again as an ordinary PNG or JPEG and try again."
            ),
        )
        self.pool._discard(child)

    def _lost(self, child: _Child) -> None:
        """The child died (or never started): its picture gets one more try elsewhere."""
        self.pool._discard(child)
        if child.job is None:
            return
        self.strikes[child.job] += 1
        if self.strikes[child.job] >= 2:
            log.error("a picture killed its preparing process twice; refusing it")
            self._settle(child.job, CorruptImage(UNREADABLE))
        else:
            log.error("a preparing process died; trying its picture once more")
            self.pending.appendleft(child.job)
