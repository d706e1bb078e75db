"""The committed demo checkpoint, through the real engine, on freshly drawn images."""

from __future__ import annotations

import random

import pytest

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.detection import Detection, iou
from inference.tasks import InferenceRequest, TaskSpec
from tests.demo import demo_engine

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

HELD_OUT_SEED = 90_210  # never used by the training script
N_IMAGES = 50
# The goal: IoU >= 0.5 on at least 80% of images. The committed checkpoint hits 49
# of these 50 (and 89 of 100 from another unseen seed, so the margin is not luck).
MIN_DETECTION_HIT_RATE = 0.8


@pytest.fixture(scope="module")
def held_out() -> list[tuple[shapes.Scene, shapes.Shape]]:
    rng = random.Random(HELD_OUT_SEED)
    out = []
    for _ in range(N_IMAGES):
        scene = shapes.make_scene(rng, size=(rng.randint(128, 320), rng.randint(128, 320)))
        out.append((scene, rng.choice(scene.shapes)))
    return out


def test_detection_boxes_overlap_the_truth(
    held_out: list[tuple[shapes.Scene, shapes.Shape]],
) -> None:
    requests = [
        InferenceRequest(TaskSpec.build("detect", objects=target.kind), encode_png(scene.image))
        for scene, target in held_out
    ]
    results = demo_engine().generate(requests)
    hits = 0
    for (_, target), result in zip(held_out, results, strict=True):
        boxes: list[Detection] = [d for d in result.detections if d.label == target.kind]
        if boxes and max(iou(d.box, target.box) for d in boxes) >= 0.5:
            hits += 1
    assert hits / N_IMAGES >= MIN_DETECTION_HIT_RATE, f"IoU >= 0.5 on only {hits}/{N_IMAGES}"


def test_colour_answers(held_out: list[tuple[shapes.Scene, shapes.Shape]]) -> None:
    requests = [
        InferenceRequest(
            TaskSpec.build("answer", question=f"what color is the {target.kind}?"),
            encode_png(scene.image),
        )
        for scene, target in held_out
    ]
    results = demo_engine().generate(requests)
    right = sum(r.text == t.color for (_, t), r in zip(held_out, results, strict=True))
    assert right / N_IMAGES >= 0.9, f"colour right on only {right}/{N_IMAGES} images"


def test_captions_name_the_shapes(held_out: list[tuple[shapes.Scene, shapes.Shape]]) -> None:
    scenes = [scene for scene, _ in held_out[:16]]
    requests = [InferenceRequest(TaskSpec.build("caption"), encode_png(s.image)) for s in scenes]
    results = demo_engine().generate(requests)

    def kinds(text: str) -> list[str]:
        return sorted(
            word.strip(",.") for word in text.split() if word.strip(",.") in shapes.SHAPES
        )

    named = sum(
        kinds(r.text) == kinds(shapes.caption(s)) for s, r in zip(scenes, results, strict=True)
    )
    exact = sum(r.text == shapes.caption(s) for s, r in zip(scenes, results, strict=True))
    texts = [r.text for r in results]
    # Naming every shape, and only those, is the caption's job; giving each of two or
    # three shapes its own colour in left-to-right order is the demo model's weak spot
    # (docs/performance.md), so the exact-match bar is lower.
    assert named / len(scenes) >= 0.8, texts
    assert exact / len(scenes) >= 0.5, texts
