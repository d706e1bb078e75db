"""The bot's peak-memory increase for a 40-megapixel /detect, before and after issue 19.

    python -m bench.bot_memory [--width 7900] [--height 5000]

Each figure comes from a fresh child process that plays the bot's side of one answer
(`tests.bot_memory`): "before" decodes the upload in full and draws on it, as the bot did
until issue 19; "after" draws on the display copy the worker now sends with the result;
"older worker" is a result without a copy (the bot reads the upload only where that takes
bounded memory). The worker's side is timed too: its decode with and without the copy.
Other scripts call `tests.bot_memory.detect_peak_increase_mb` directly.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from inference.display import load_with_display
from inference.intake import load_image
from tests.bot_memory import MODEL_SIDE, big_upload, detect_result, measure


def _best_s(call: Callable[[], object], rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main(width: int, height: int) -> None:
    upload, detection = big_upload(width, height)
    print(f"a {width} x {height} RGBA PNG ({width * height / 1e6:.1f} MP, {len(upload):,} bytes)")
    print(f"{'path':<14} {'peak increase':>14} {'compose':>9} {'picture sent':>14}")
    for label, how in (("before", "full"), ("after", "display"), ("older worker", "fallback")):
        result = detect_result(upload, detection, with_display=how == "display")
        m = measure(upload, result, how)
        sent = f"{m.pictures[0]:,} B" if m.pictures else "none (text)"
        print(f"{label:<14} {m.increase_mb:>11.0f} MB {m.seconds:>8.2f}s {sent:>14}")
    alone = _best_s(lambda: load_image(upload, target_size=MODEL_SIDE))
    both = _best_s(lambda: load_with_display(upload, target_size=MODEL_SIDE))
    print(f"worker decode: {alone:.2f}s for the model alone, {both:.2f}s with the display copy")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=7900)
    parser.add_argument("--height", type=int, default=5000)
    args = parser.parse_args()
    main(args.width, args.height)
