"""The worker's image-feature cache: bounded, least recently used first out, and a
follow-up on the same picture that skips the vision tower without changing its answer."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.features import FeatureCache, ImageFeatures
from inference.engine.paligemma import PaliGemmaEngine
from inference.tasks import InferenceRequest, TaskSpec
from tests.support.demo import demo_settings

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


def _tensor(n_bytes: int, fill: float = 1.0) -> torch.Tensor:
    return torch.full((n_bytes // 4,), fill, dtype=torch.float32)


def test_cache_drops_the_least_recently_used_to_stay_within_its_bytes() -> None:
    cache = FeatureCache(max_bytes=300)
    cache.put("a", _tensor(100))
    cache.put("b", _tensor(100))
    cache.put("c", _tensor(100))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", _tensor(100))
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.bytes_used == 300 and len(cache) == 3
    cache.put("a", _tensor(200, 2.0))  # replacing a kept item frees its old bytes first
    kept = cache.get("a")
    assert kept is not None and float(kept[0]) == 2.0
    assert cache.bytes_used <= 300


def test_cache_keeps_nothing_larger_than_its_budget_and_nothing_at_zero() -> None:
    cache = FeatureCache(max_bytes=100)
    cache.put("big", _tensor(104))
    assert cache.get("big") is None and cache.bytes_used == 0
    off = FeatureCache(max_bytes=0)
    off.put("a", _tensor(4))
    assert len(off) == 0 and off.misses == 0
    assert off.get("a") is None and off.misses == 1


def test_a_picture_twice_in_one_chunk_runs_through_the_tower_once() -> None:
    calls: list[int] = []

    def tower(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(len(pixels))
        return pixels.sum(dim=(2, 3)).unsqueeze(1)  # (n, 1, channels): stands for features

    images = {"x": torch.ones(3, 2, 2), "y": torch.full((3, 2, 2), 2.0)}
    order = ["x", "y", "x"]
    features = ImageFeatures(tower, FeatureCache(max_bytes=1 << 20))
    out = features.of(order, lambda rows: torch.stack([images[order[r]] for r in rows]))
    assert calls == [2]
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
    again = features.of(["y", "x"], lambda rows: torch.stack([images["x"]] * len(rows)))
    assert calls == [2]  # both kept: no pixels needed at all
    assert torch.equal(again, out[[1, 0]])


@contextmanager
def _tower_calls(engine: PaliGemmaEngine) -> Iterator[list[int]]:
    """Pictures run through the real vision tower, one entry per call."""
    calls: list[int] = []
    tower = engine._loaded.model.model.vision_tower
    hook = tower.register_forward_hook(lambda _m, args, _o: calls.append(len(args[0])))
    try:
        yield calls
    finally:
        hook.remove()


@pytest.fixture(scope="module")
def engines() -> tuple[PaliGemmaEngine, PaliGemmaEngine]:
    """The demo model with its cache, and with the cache off, as the reference."""
    with_cache = PaliGemmaEngine.from_settings(demo_settings())
    without = PaliGemmaEngine.from_settings(demo_settings(feature_cache_max_bytes=0))
    return with_cache, without


def _picture(seed: int) -> bytes:
    return encode_png(shapes.make_scene(random.Random(seed), size=(240, 180)).image)


def test_ask_after_describe_skips_the_vision_tower_with_the_same_answer(
    engines: tuple[PaliGemmaEngine, PaliGemmaEngine],
) -> None:
    cached, reference = engines
    picture = _picture(21)
    describe = InferenceRequest(TaskSpec.build("describe"), picture)
    ask = InferenceRequest(TaskSpec.build("answer", question="what color is the square?"), picture)
    detect = InferenceRequest(TaskSpec.build("detect", objects="square"), picture)
    with _tower_calls(cached) as calls:
        first = cached.generate([describe])
        follow_ups = [cached.generate([ask]), cached.generate([detect])]
    assert calls == [1]
    assert [first, *follow_ups] == [reference.generate([r]) for r in (describe, ask, detect)]
    assert follow_ups[0][0].ok and follow_ups[0][0].text


def test_only_the_new_pictures_of_a_batch_run_through_the_tower(
    engines: tuple[PaliGemmaEngine, PaliGemmaEngine],
) -> None:
    cached, reference = engines
    seen, new = _picture(31), _picture(32)
    cached.generate([InferenceRequest(TaskSpec.build("caption"), seen)])
    batch = [
        InferenceRequest(TaskSpec.build("answer", question="how many shapes are there?"), seen),
        InferenceRequest(TaskSpec.build("caption"), new),
    ]
    with _tower_calls(cached) as calls:
        results = cached.generate(batch)
    assert calls == [1]
    assert results == reference.generate(batch)


def test_a_full_cache_forgets_the_oldest_picture() -> None:
    engine = PaliGemmaEngine.from_settings(demo_settings())
    one = engine._vision_tower(torch.zeros(1, 3, engine.image_size, engine.image_size))
    engine.features.cache = FeatureCache(max_bytes=one.numel() * one.element_size())
    first, second = _picture(41), _picture(42)
    caption = TaskSpec.build("caption")
    with _tower_calls(engine) as calls:
        for picture in (first, second, second, first):
            engine.generate([InferenceRequest(caption, picture)])
    assert calls == [1, 1, 1]  # second was kept; first had been pushed out by it
    assert len(engine.features.cache) == 1
