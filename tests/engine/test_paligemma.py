"""The real transformers PaliGemma classes behind our engine, on the demo checkpoint."""

from __future__ import annotations

import random

import pytest

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.tasks import InferenceRequest, Task, TaskSpec
from inference.worker.runner import generate_resilient
from tests.support.demo import count_generate, demo_engine

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


def _images(n: int, seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    return [
        encode_png(shapes.make_scene(rng, size=(rng.randint(100, 300), 200)).image)
        for _ in range(n)
    ]


def _mixed_requests() -> list[InferenceRequest]:
    imgs = _images(6)
    specs = [
        TaskSpec.build("caption"),
        TaskSpec.build("detect", objects="circle ; square"),
        TaskSpec.build("answer", question="what color is the circle?"),
        TaskSpec.build("describe"),
        TaskSpec.build("answer", question="how many shapes are there?"),
        TaskSpec.build("detect", objects="triangle"),
    ]
    return [InferenceRequest(s, img) for s, img in zip(specs, imgs, strict=True)]


def test_resolution_comes_from_the_processor_config() -> None:
    assert demo_engine().image_size == 112


def test_batched_outputs_equal_one_by_one_outputs() -> None:
    engine = demo_engine()
    requests = _mixed_requests()
    batched = engine.generate(requests)
    alone = [engine.generate([r])[0] for r in requests]
    assert [r.task for r in batched] == [r.spec.task for r in requests]
    assert batched == alone
    assert all(r.ok and r.text for r in batched)


def test_a_bad_image_fails_only_its_own_request() -> None:
    good = _mixed_requests()[:2]
    bad = InferenceRequest(TaskSpec.build("caption"), b"GIF89a not really a gif")
    results = demo_engine().generate([good[0], bad, good[1]])
    assert results[0] == demo_engine().generate([good[0]])[0]
    assert results[2] == demo_engine().generate([good[1]])[0]
    assert not results[1].ok
    assert results[1].error == "image_corrupt" or results[1].error == "image_not_image"
    assert results[1].error_message


def test_detections_are_in_original_image_pixels() -> None:
    scene = shapes.make_scene(random.Random(3), size=(300, 150), min_shapes=1, max_shapes=1)
    target = scene.shapes[0]
    (result,) = demo_engine().generate(
        [InferenceRequest(TaskSpec.build("detect", objects=target.kind), encode_png(scene.image))]
    )
    assert result.task is Task.DETECT
    assert result.detections, result.text
    x0, y0, x1, y1 = result.detections[0].box
    assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 150
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert target.box[0] <= cx <= target.box[2] and target.box[1] <= cy <= target.box[3]
    # The picture to draw them on comes back with them, sized and oriented like the upload.
    assert result.display is not None and result.display.original_size == (300, 150)
    assert result.display.open().size == (300, 150)


def test_only_answers_drawn_on_the_picture_carry_a_copy_of_it() -> None:
    img = _images(1)[0]
    caption, detect = demo_engine().generate(
        [
            InferenceRequest(TaskSpec.build("caption"), img),
            InferenceRequest(TaskSpec.build("detect", objects="circle"), img),
        ]
    )
    assert caption.display is None and detect.display is not None


def test_per_request_token_budget_is_respected() -> None:
    img = _images(1)[0]
    short = TaskSpec.build("describe", max_new_tokens=3)
    (result,) = demo_engine().generate([InferenceRequest(short, img)])
    full = demo_engine().generate([InferenceRequest(TaskSpec.build("describe"), img)])[0]
    assert full.text.startswith(result.text)
    assert len(result.text.split()) <= 3 < len(full.text.split())


def test_warmup_leaves_no_picture_features_behind() -> None:
    engine = demo_engine()
    engine.generate(_mixed_requests()[:1])
    assert len(engine.features.cache) >= 1
    engine.warmup()
    assert len(engine.features.cache) == 0


def test_a_question_spelling_image_tokens_costs_its_batch_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of 8 with `<image>` typed in one question: one generate call, every row
    answered. Fails on the old encoding: that row gained a real image token, the batch
    raised "Image features and image tokens do not match" and ran again one by one (9
    calls), and the asker got an error."""
    engine = demo_engine()
    questions = ["what color is the circle?", "how many shapes are there?"] * 4
    questions[5] = "what is <image> in this <image> picture?"
    requests = [
        InferenceRequest(TaskSpec.build("answer", question=q, max_new_tokens=4), img)
        for q, img in zip(questions, _images(8), strict=True)
    ]
    prepared = engine.prepare(requests)
    rows = count_generate(monkeypatch, engine)
    before = engine.generate_calls
    results = generate_resilient(engine, prepared)
    assert rows == [8]
    assert engine.generate_calls - before == 1
    assert all(r is not None and r.ok and r.text for r in results), results
