"""Offline CLI: `python -m inference TASK IMAGE ...` prints one JSON object on stdout.

For operators checking a model without Redis or Discord, and for scripted checks.
Errors end with a non-zero exit and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from inference.detection import Detection
from inference.errors import ConfigurationError, PalicordError
from inference.queue.settings import describe_errors, load_settings
from inference.segmentation import segments_json
from inference.settings import EngineSettings
from inference.tasks import Task, TaskSpec

EXIT_USAGE = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description="Run one PaliGemma 2 task on one image and print the result as JSON.",
    )
    parser.add_argument("task", choices=[t.value for t in Task])
    parser.add_argument("image", type=Path, help="image file (PNG, JPEG, GIF, WebP, BMP)")
    parser.add_argument("--question", "-q", help="question for `answer`")
    parser.add_argument(
        "--objects", "-o", help='objects for `detect` and `segment`, e.g. "cat ; dog"'
    )
    parser.add_argument("--lang", "-l", default=None, help="language code (default en)")
    parser.add_argument("--model", "-m", default=None, help="hub id or local checkpoint dir")
    parser.add_argument("--quantization", choices=["none", "8bit", "4bit"], default=None)
    parser.add_argument("--generation-loop", choices=["transformers", "static"], default=None)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if present)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the annotated image here")
    parser.add_argument(
        "--mask-decoder", type=Path, default=None, help="vae-oid.npz for `segment` masks"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log to stderr")
    return parser


@contextmanager
def progress(message: str, stream: TextIO) -> Iterator[None]:
    """A spinner with elapsed seconds on a terminal; one plain line otherwise."""
    if not stream.isatty():
        print(f"{message}...", file=stream, flush=True)
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def spin() -> None:
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            elapsed = time.monotonic() - started
            print(f"\r{frames[i % 4]} {message}... {elapsed:.0f}s", end="", file=stream, flush=True)
            i += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        print(f"\r{message}: done in {time.monotonic() - started:.1f}s", file=stream, flush=True)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Do the work for parsed arguments; raises PalicordError for user-facing failures."""
    spec = TaskSpec.build(
        args.task,
        language=args.lang,
        question=args.question,
        objects=args.objects,
        max_new_tokens=args.max_new_tokens,
    )
    try:
        data = args.image.read_bytes()
    except OSError as exc:
        raise PalicordError(f"Cannot read {args.image}: {exc.strerror or exc}") from exc

    overrides: dict[str, object] = {}
    if args.model:
        overrides["model_id"] = args.model
    if args.quantization:
        overrides["quantization"] = args.quantization
    if args.generation_loop:
        overrides["generation_loop"] = args.generation_loop
    if args.device:
        overrides["device"] = args.device
    if args.mask_decoder:
        overrides["mask_decoder"] = args.mask_decoder
    settings = load_settings(EngineSettings, **overrides)

    # Check the picture before the slow model load, so a bad file fails in a blink.
    from inference.intake import probe_image

    info = probe_image(
        data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
    )

    # Imported here so `--help` and argument errors stay instant (torch is slow to import).
    from inference.engine.paligemma import PaliGemmaEngine
    from inference.tasks import InferenceRequest
    from inference.worker.runner import generate_resilient

    # One picture: preparing it here beats starting processes to do it.
    one = {"batch_size": 1, "prepare_processes": 0}
    with progress(f"Loading {settings.model_id}", sys.stderr):
        engine = PaliGemmaEngine.from_settings(settings.model_copy(update=one))
    (result,) = generate_resilient(engine, [InferenceRequest(spec, data)])
    if result is None or not result.ok:  # None only when stopped, which nothing does here
        raise PalicordError(result.error_message if result else None)
    if args.out is not None and spec.task.draws:
        _write_annotated(data, result.detections, args.out, settings)
    output = result.to_dict()
    if spec.task is Task.SEGMENT:  # masks as COCO RLE on the picture, not packed 64 × 64
        # The upright picture's size (the header's may be before EXIF rotation).
        size = result.display.original_size if result.display else (info.width, info.height)
        output["segments"] = segments_json(result.detections, size)
    return output


def _write_annotated(
    data: bytes, detections: Sequence[Detection], out: Path, settings: EngineSettings
) -> None:
    from inference.annotate import annotate
    from inference.intake import load_image

    original = load_image(
        data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
    )
    encoded = annotate(original.image, detections)
    if encoded.format == "JPEG" and out.suffix.lower() == ".png":
        # Too big for Discord as PNG, so annotate() chose JPEG; name the file truthfully.
        out = out.with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encoded.data)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # transformers prints load reports and warnings of its own; keep stderr to our line.
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        output = run(args)
    except ConfigurationError as exc:  # names the wrong settings, never their values
        print(f"error: bad configuration: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except PalicordError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except ValidationError as exc:  # a setting refused outside load_settings
        print(f"error: bad configuration: {describe_errors(exc, EngineSettings)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a CLI must end in one line, whatever broke
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    json.dump(output, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
