"""Synthetic images of coloured shapes with ground truth, for the demo model and tests.

Torch-free and deterministic for a given `random.Random`, so held-out evaluation images
come from a seed the training run never used.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
}
BACKGROUND = (245, 245, 240)
NUMBER_WORDS = ("zero", "one", "two", "three")


@dataclass(frozen=True, slots=True)
class Shape:
    """One drawn shape and its pixel bounding box (x0, y0, x1, y1)."""

    kind: str
    color: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Scene:
    """An image and the shapes drawn on it."""

    image: Image.Image
    shapes: tuple[Shape, ...]

    def of_kind(self, kind: str) -> list[Shape]:
        return [s for s in self.shapes if s.kind == kind]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: Shape, fill: int | tuple[int, int, int] | None = None
) -> None:
    """Draw one shape (in its own colour unless `fill` is given, e.g. a label index)."""
    fill = COLORS[shape.color] if fill is None else fill
    x0, y0, x1, y1 = shape.box
    if shape.kind == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif shape.kind == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)


def make_scene(
    rng: random.Random,
    *,
    size: tuple[int, int] = (224, 224),
    min_shapes: int = 1,
    max_shapes: int = 3,
    distinct_kinds: bool = True,
) -> Scene:
    """Draw 1–3 non-overlapping shapes; with distinct_kinds each kind appears at most once."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    count = rng.randint(min_shapes, max_shapes)
    kinds = rng.sample(SHAPES, k=min(count, len(SHAPES))) if distinct_kinds else []
    shapes: list[Shape] = []
    short = min(width, height)
    for i in range(count):
        kind = kinds[i] if distinct_kinds else rng.choice(SHAPES)
        color = rng.choice(list(COLORS))
        for _ in range(50):
            side = rng.randint(math.ceil(short * 0.22), math.floor(short * 0.42))
            # Non-square images keep the shape's aspect, so stretch the box with the image.
            w = round(side * width / short)
            h = round(side * height / short)
            x0 = rng.randint(0, width - w)
            y0 = rng.randint(0, height - h)
            box = (x0, y0, x0 + w, y0 + h)
            if all(not _overlaps(box, s.box, margin=2) for s in shapes):
                shapes.append(Shape(kind, color, box))
                break
    for shape in shapes:
        draw_shape(draw, shape)
    return Scene(image=image, shapes=tuple(shapes))


def _position_words(scene: Scene, shape: Shape) -> str:
    cx = (shape.box[0] + shape.box[2]) / 2 / scene.image.width
    if cx < 0.4:
        return "on the left"
    if cx > 0.6:
        return "on the right"
    return "in the middle"


def caption(scene: Scene) -> str:
    """Short caption, e.g. 'a red circle and a blue square'."""
    parts = [f"a {s.color} {s.kind}" for s in sorted(scene.shapes, key=lambda s: s.box[0])]
    return " and ".join(parts) if len(parts) < 3 else ", ".join(parts[:-1]) + " and " + parts[-1]


def description(scene: Scene) -> str:
    """Longer description naming count, shapes and rough positions."""
    n = len(scene.shapes)
    noun = "shape" if n == 1 else "shapes"
    head = f"a picture of {NUMBER_WORDS[n]} {noun} on a light background."
    body = " ".join(
        f"there is a {s.color} {s.kind} {_position_words(scene, s)}."
        for s in sorted(scene.shapes, key=lambda s: s.box[0])
    )
    return f"{head} {body}"


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of a picture, as a user would upload it."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
