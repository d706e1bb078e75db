"""How much JPEG draft decoding saves: a 24-Mpx photo to the model's 448 x 448 input.

Run: `.venv/bin/python -m bench.intake`. Compares our path, `load_image(target_size=448)`
then a resize to 448 x 448, with the naive full decode, `Image.open().convert("RGB")`
then the same resize, on a smooth and on a grainy, photo-sized JPEG built in memory.
Runs alternate so that drift (CPU clocks, neighbours, caches) hits both paths alike.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter

from inference.intake import load_image

WIDTH, HEIGHT = 6000, 4000
TARGET = 448
QUALITY = 90
GOAL_RATIO = 0.25


def photo_like_jpeg(grain: float, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """Smooth gradients and soft shapes, plus `grain` (0..1) of sensor-like noise."""
    small = (width // 8, height // 8)
    base = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").resize(small),
            Image.radial_gradient("L").resize(small),
            Image.linear_gradient("L").rotate(90).resize(small),
        ),
    )
    draw = ImageDraw.Draw(base)
    for i in range(40):
        x, y = (i * 137) % small[0], (i * 89) % small[1]
        r = 10 + (i * 23) % 60
        draw.ellipse((x - r, y - r, x + r, y + r), fill=((i * 50) % 256, (i * 90) % 256, 120))
    image = base.filter(ImageFilter.GaussianBlur(3)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    if grain > 0:
        noise = Image.effect_noise((width, height), 30).convert("RGB")
        image = Image.blend(image, noise, grain)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def ours(data: bytes) -> Image.Image:
    loaded = load_image(
        data, max_bytes=64 * 1024 * 1024, max_pixels=WIDTH * HEIGHT, target_size=TARGET
    )
    return loaded.image.resize((TARGET, TARGET), Image.Resampling.BICUBIC)


def naive(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image.resize((TARGET, TARGET), Image.Resampling.BICUBIC)


def _time(fn: Callable[[bytes], Image.Image], data: bytes) -> float:
    start = time.perf_counter()
    out = fn(data)
    elapsed = time.perf_counter() - start
    assert out.size == (TARGET, TARGET)
    return elapsed


def main() -> None:
    """Build the test photos, time both paths alternately and print medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    print(f"{WIDTH}x{HEIGHT} JPEG, quality {QUALITY} -> {TARGET}x{TARGET}; {args.repeats} runs")
    print("of each path, interleaved. Times are medians (min-max) in ms.\n")
    header = f"{'input':<28} {'ours':>18} {'naive':>18} {'ours/naive':>10}"
    print(header)
    print("-" * len(header))
    ratios = []
    # Draft mode skips most of the IDCT and colour work but not Huffman decoding, so the
    # saving shrinks as the file grows: smooth content, then grain like a real 24-Mpx
    # photo (whose JPEGs weigh 6-12 MB).
    for name, grain in (("smooth", 0.0), ("grainy (photo-like)", 0.25)):
        data = photo_like_jpeg(grain)
        ours(data), naive(data)  # warm caches and Pillow's lazy imports
        times: dict[str, list[float]] = {"ours": [], "naive": []}
        for _ in range(args.repeats):
            times["ours"].append(_time(ours, data))
            times["naive"].append(_time(naive, data))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        span = {k: f"({min(v) * 1e3:.0f}-{max(v) * 1e3:.0f})" for k, v in times.items()}
        ratios.append(med["ours"] / med["naive"])
        label = f"{name}, {len(data) / 1e6:.1f} MB"
        print(
            f"{label:<28} {med['ours']:>6.0f} {span['ours']:>11} "
            f"{med['naive']:>6.0f} {span['naive']:>11} {ratios[-1]:>10.3f}"
        )
    worst = max(ratios)
    verdict = "meets" if worst <= GOAL_RATIO else "misses"
    print(f"\nworst ratio {worst:.3f}: {verdict} the goal of <= {GOAL_RATIO}")
    print(f"ours = load_image(target_size={TARGET}) + resize; naive = full decode + resize")


if __name__ == "__main__":
    main()
