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
copy is a quarter of the size. A child that dies (a decoder crash, the OOM killer)
breaks the pool: the batch's pictures are then prepared one at a time in fresh
processes, and one that breaks its process again is refused with a clear error, so a
hostile file can never take the worker down with it.
With `PREPARE_PROCESSES=0`, everything runs in the calling thread.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import logging
import multiprocessing
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from inference.errors import CorruptImage, PalicordError
from inference.intake import load_image
from inference.queue.memory import picture_digest

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
        """The request's token ids and square RGB picture; a bad picture is its error."""
        spec = self.spec
        try:
            loaded = load_image(
                image,
                max_bytes=spec.max_image_bytes,
                max_pixels=spec.max_image_pixels,
                target_size=spec.target_size,
            )
        except PalicordError as exc:
            return exc
        return Encoded(
            input_ids=self.token_ids(prompt),
            pixels=self.square(loaded.image),
            original_size=loaded.original_size,
            digest=picture_digest(image),
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


_CHILD: dict[str, Encoding] = {}  # the preparing process's own, set by its initializer


def _start_child(spec: EncodeSpec) -> None:
    if sys.platform.startswith("linux"):
        # Exit with the worker, even when it is killed outright (SIGKILL from a supervisor).
        # Linux sends it when the thread that started the process ends: `start` runs on
        # the worker's engine thread, which lives as long as the worker.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    _CHILD["encoding"] = Encoding(spec)


def _encode_in_child(item: tuple[bytes, str]) -> Encoded | PalicordError:
    return _CHILD["encoding"].encode(*item)


class PreparePool:
    """Encodes requests in `processes` spawned processes (0: in the calling thread)."""

    def __init__(self, spec: EncodeSpec, processes: int) -> None:
        self._local = Encoding(spec)
        self._spec = spec
        self._processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    @property
    def local(self) -> Encoding:
        """The calling process's own encoding (the engine's checks and fallbacks use it)."""
        return self._local

    def encode(self, items: Sequence[tuple[bytes, str]]) -> list[Encoded | PalicordError]:
        """Each (picture bytes, prompt) encoded, in order."""
        if self._processes == 0 or not items:
            return [self._local.encode(*item) for item in items]
        pool = self._started()
        try:
            # One task per process, not per picture: each task costs a round trip through
            # the executor's Python threads, which take the GIL from generation.
            chunk = -(-len(items) // self._processes)
            return list(pool.map(_encode_in_child, items, chunksize=chunk))
        except concurrent.futures.process.BrokenProcessPool:
            log.error("a preparing process died; preparing this batch one picture at a time")
            self.close()
            return [self._alone(item) for item in items]

    def _alone(self, item: tuple[bytes, str]) -> Encoded | PalicordError:
        """One picture in a process of its own: one that kills it again is refused, so a
        picture that crashes a decoder costs only its own request, never the worker."""
        try:
            return self._started().submit(_encode_in_child, item).result()
        except concurrent.futures.process.BrokenProcessPool:
            log.error("a picture killed its preparing process; refusing it")
            self.close()
            return CorruptImage(UNREADABLE)

    def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the worker holds CUDA state, OpenMP teams and threads, none
            # of which survive a fork safely.
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(self._spec,),
            )
        return self._pool

    def start(self) -> None:
        """Start the processes now (they take ~1 s to import) rather than on first use."""
        if self._processes:
            pool = self._started()
            list(pool.map(_ping, range(self._processes)))

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _ping(n: int) -> int:
    return n
