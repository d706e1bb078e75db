"""The committed demo checkpoint, through the real engine, on freshly drawn images."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.detection import Detection, iou
from inference.segmentation import segments_json
from inference.tasks import InferenceRequest, TaskSpec
from tests.support.demo import demo_engine
from tests.support.masks import rle_decode

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


def test_segment_masks_overlap_the_truth() -> None:
    # The goal: mask IoU >= 0.6 on at least 80% of held-out one-shape pictures,
    # each mask decoded by the demo's mask_decoder.npz and resized into the model's box.
    rng = random.Random(HELD_OUT_SEED)
    held = []
    for _ in range(N_IMAGES):
        size = (rng.randint(128, 320), rng.randint(128, 320))
        scene = shapes.make_scene(rng, size=size, min_shapes=1, max_shapes=1)
        held.append((scene, scene.shapes[0]))
    requests = [
        InferenceRequest(TaskSpec.build("segment", objects=shape.kind), encode_png(scene.image))
        for scene, shape in held
    ]
    hits = 0
    for (scene, shape), result in zip(held, demo_engine().generate(requests), strict=True):
        truth = Image.new("L", scene.image.size, 0)
        shapes.draw_shape(ImageDraw.Draw(truth), shape, fill=255)
        want = np.asarray(truth) > 0
        best = 0.0
        mine = [d for d in result.detections if d.label == shape.kind]
        for segment in segments_json(mine, scene.image.size):
            if segment["mask"] is not None:
                got = rle_decode(segment["mask"])  # type: ignore[arg-type]
                best = max(best, float((got & want).sum() / (got | want).sum()))
        hits += best >= 0.6
    assert hits / N_IMAGES >= 0.8, f"mask IoU >= 0.6 on only {hits}/{N_IMAGES}"
