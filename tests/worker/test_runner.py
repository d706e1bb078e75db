"""The one policy for failing rows (`generate_resilient`), on the real demo engine."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.inputs import ModelInput
from inference.tasks import InferenceRequest, TaskSpec
from inference.worker.runner import generate_resilient
from tests.support.demo import count_generate, demo_engine

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


def _requests(n: int) -> list[InferenceRequest]:
    rng = random.Random(11)
    questions = ["what color is the circle?", "how many shapes are there?", "is it red?"]
    return [
        InferenceRequest(
            TaskSpec.build("answer", question=questions[i % 3] + f" ({i})", max_new_tokens=3),
            encode_png(shapes.make_scene(rng, size=(160, 120)).image),
        )
        for i in range(n)
    ]


def test_one_failing_row_is_isolated_in_log_n_generate_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model raises for any batch holding one marked row (as a row that breaks its
    batch does). Fails on the old code: the engine then generated one by one (9 calls)."""
    engine = demo_engine()
    n, bad = 8, 5
    prepared = engine.prepare(_requests(n))
    alone = [r for i, r in enumerate(prepared) if i != bad]
    expected = generate_resilient(engine, alone)
    marked = prepared[bad].prepared
    assert isinstance(marked, ModelInput)
    rows = count_generate(monkeypatch, engine)
    counted = engine._loaded.model.generate

    def failing(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs["input_ids"]
        width = len(marked.input_ids)
        if any(torch.equal(row[-width:].cpu(), marked.input_ids) for row in ids):
            rows.append(int(ids.shape[0]))  # this call counts too
            raise ValueError("this row breaks its batch")
        return counted(*args, **kwargs)

    monkeypatch.setattr(engine._loaded.model, "generate", failing)
    results = generate_resilient(engine, prepared)
    assert len(rows) <= 2 * math.ceil(math.log2(n)) + 1, rows
    assert sorted(rows, reverse=True) == [8, 4, 4, 2, 2, 1, 1]  # halves, never one by one
    failed = results[bad]
    assert failed is not None and failed.error == "generation" and failed.error_message
    assert [r for i, r in enumerate(results) if i != bad] == expected
    assert all(r is not None and r.ok for r in expected)
