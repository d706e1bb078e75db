"""The fixed-shape loop (`GENERATION_LOOP=static`) against transformers' `generate`: token
for token, in float32 on the CPU, on the demo checkpoint and on a random model whose
sliding window is short enough for budgets to run past it."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from transformers import (
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    StoppingCriteriaList,
)
from transformers.modeling_outputs import BaseModelOutputWithPooling

from inference import cli
from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.inputs import ModelInput, RowBudgets, collate, stack_pixels
from inference.engine.loading import load_model
from inference.engine.paligemma import PaliGemmaEngine
from inference.engine.static_loop import StaticLoop, default_batch_buckets, eos_token_ids
from inference.errors import ModelLoadError
from inference.queue.settings import describe_errors
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, TaskSpec
from inference.worker import __main__ as worker_main
from tests.support.demo import DEMO_MODEL, demo_engine, demo_settings

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

PAD = 0


def _reference(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, features: torch.Tensor, budgets: list[int]
) -> torch.Tensor:
    """What the engine's transformers path gets: `generate` with per-row budgets."""
    prompt_len = ids.shape[1]
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=torch.zeros_like(ids),
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
        max_new_tokens=max(budgets),
        stopping_criteria=StoppingCriteriaList([RowBudgets(prompt_len, budgets, ids.device)]),
        do_sample=False,
        num_beams=1,
        pad_token_id=PAD,
    )
    return out[:, prompt_len:]  # type: ignore[no-any-return]


def _same(reference: torch.Tensor, ours: torch.Tensor) -> None:
    """Equal where `generate` ran; pad after (it stops once every row has)."""
    steps = reference.shape[1]
    assert torch.equal(ours[:, :steps], reference)
    assert bool((ours[:, steps:] == PAD).all())


# --- the demo checkpoint: every task, mixed budgets, left padding ---------------------------

SPECS = [
    TaskSpec.build("caption"),
    TaskSpec.build("detect", objects="circle ; square"),
    TaskSpec.build("answer", question="what color is the circle?"),
    TaskSpec.build("describe"),
    TaskSpec.build("ocr"),
    TaskSpec.build("answer", question="how many shapes are there in this picture?"),
    TaskSpec.build("caption", max_new_tokens=3),
    TaskSpec.build("describe", max_new_tokens=7),
    TaskSpec.build("detect", objects="triangle"),
    TaskSpec.build("caption", language="fr"),
]


@functools.cache
def _pictures(n: int) -> list[bytes]:
    rng = random.Random(11)
    return [
        encode_png(shapes.make_scene(rng, size=(rng.randint(100, 300), 200)).image)
        for _ in range(n)
    ]


def _demo_batch(
    n: int,
) -> tuple[PaliGemmaEngine, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[int]]:
    """The engine, the chunk's tokens, pixels and features, and the rows' budgets."""
    engine = demo_engine()
    lm = engine._loaded
    specs = [SPECS[i % len(SPECS)] for i in range(n)]
    requests = [InferenceRequest(s, p) for s, p in zip(specs, _pictures(n), strict=True)]
    inputs = [r.prepared for r in engine.prepare(requests)]
    assert all(isinstance(i, ModelInput) for i in inputs)
    rows: list[ModelInput] = inputs  # type: ignore[assignment]
    pixels = engine._normalise(stack_pixels([i.pixels for i in rows], lm.device), lm.dtype)
    features = engine._vision_tower(pixels)
    tokens = collate(rows, pad_token_id=PAD, device=lm.device)
    return engine, tokens, pixels, features, [s.token_budget for s in specs]


@pytest.mark.parametrize(
    ("rows", "fixed_shapes"), [(1, True), (10, False), (10, True), (32, False)]
)
def test_demo_model_same_tokens_as_generate_for_every_task(rows: int, fixed_shapes: bool) -> None:
    engine, tokens, _, features, budgets = _demo_batch(rows)
    model = engine._loaded.model
    assert len(set(tokens["attention_mask"].sum(-1).tolist())) > 1 or rows == 1  # left padding
    reference = _reference(model, tokens["input_ids"], tokens["attention_mask"], features, budgets)
    loop = StaticLoop(
        model, pad_token_id=PAD, eos_token_ids=eos_token_ids(model), fixed_shapes=fixed_shapes
    )
    ours = loop.generate(tokens["input_ids"], tokens["attention_mask"], features, budgets)
    assert ours.shape == (rows, max(budgets))
    _same(reference, ours)


def test_demo_model_padded_batch_buckets_and_slots_give_the_same_tokens() -> None:
    engine, tokens, _, features, budgets = _demo_batch(5)
    model = engine._loaded.model
    reference = _reference(model, tokens["input_ids"], tokens["attention_mask"], features, budgets)
    loop = StaticLoop(
        model,
        pad_token_id=PAD,
        eos_token_ids=[1],
        batch_buckets=(2, 8),
        slot_step=64,
        fixed_shapes=True,
    )
    for _ in range(2):  # the second call reuses the first one's buffers
        _same(
            reference,
            loop.generate(tokens["input_ids"], tokens["attention_mask"], features, budgets),
        )


def test_engine_static_loop_gives_the_transformers_engines_answers_with_kept_features() -> None:
    settings = demo_settings(generation_loop="static", feature_cache_max_bytes=1 << 24)
    static = PaliGemmaEngine.from_settings(settings)
    assert static._static is not None
    reference = demo_engine()
    pictures = _pictures(4)
    first = [InferenceRequest(s, p) for s, p in zip(SPECS[:4], pictures, strict=True)]
    # The same pictures again with other tasks: their features now come from the cache.
    again = [InferenceRequest(s, p) for s, p in zip(SPECS[4:8], pictures, strict=True)]
    assert static.generate(first) == reference.generate(first)
    hits = static.features.cache.hits
    assert static.generate(again) == reference.generate(again)
    assert static.features.cache.hits == hits + 4


# --- a random model with a sliding window of 6 tokens ---------------------------------------

WINDOW = 6
IMAGE_TOKENS = 4
IMAGE_ID, BOS, EOS, VOCAB = 3, 2, 1, 97


@functools.cache
def _windowed_model() -> PaliGemmaForConditionalGeneration:
    config = PaliGemmaConfig(
        text_config={
            "model_type": "gemma2",
            "vocab_size": VOCAB,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "query_pre_attn_scalar": 8,
            "sliding_window": WINDOW,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "max_position_embeddings": 128,
            "pad_token_id": PAD,
            "eos_token_id": EOS,
            "bos_token_id": BOS,
            # Large random weights: attention, not the token's own embedding, decides.
            "initializer_range": 0.5,
        },
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        image_token_index=IMAGE_ID,
        projection_dim=32,
        hidden_size=32,
        vocab_size=VOCAB,
    )
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = EOS
    return model


def _windowed_batch(
    lengths: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    longest = IMAGE_TOKENS + 1 + max(lengths)
    ids = torch.full((len(lengths), longest), PAD)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        text = torch.randint(4, VOCAB, (n,), generator=gen)
        prompt = torch.cat([torch.full((IMAGE_TOKENS,), IMAGE_ID), torch.tensor([BOS]), text])
        ids[row, longest - len(prompt) :] = prompt
        mask[row, longest - len(prompt) :] = 1
    features = torch.randn((len(lengths), IMAGE_TOKENS, 32), generator=gen)
    return ids, mask, features


@pytest.mark.parametrize(
    ("stop_check_steps", "buckets", "fixed_shapes"),
    [(0, None, True), (1, (4, 8), True), (8, (16,), True), (1, None, False)],
)
@torch.inference_mode()
def test_sliding_window_layers_masked_as_transformers_does(
    stop_check_steps: int,
    buckets: tuple[int, ...] | None,
    fixed_shapes: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _windowed_model()
    lengths = [1, 9, 4]  # prompts of 6 to 14 tokens: longer and shorter than the window
    ids, mask, features = _windowed_batch(lengths, seed=stop_check_steps)
    budgets = [30, 3, 17]
    reference = _reference(model, ids, mask, features, budgets)
    loop = StaticLoop(
        model,
        pad_token_id=PAD,
        eos_token_ids=[EOS],
        batch_buckets=buckets,
        slot_step=16,
        stop_check_steps=stop_check_steps,
        fixed_shapes=fixed_shapes,
    )
    # A random model repeats one token whatever it attends to: compare the logits too.
    seen: list[torch.Tensor] = []
    logits = loop._logits

    def keep(hidden: torch.Tensor) -> torch.Tensor:
        out = logits(hidden)
        seen.append(out[: len(lengths)].clone())
        return out

    monkeypatch.setattr(loop, "_logits", keep)
    ours = loop.generate(ids, mask, features, budgets)
    _same(reference, ours)
    expected = _reference_logits(model, ids, mask, features, budgets)
    torch.testing.assert_close(torch.stack(seen, 1), expected, rtol=1e-4, atol=1e-4)
    # The long row really ran past the window: more than 2 windows of new tokens.
    assert int((ours[0] != PAD).sum()) > 2 * WINDOW


def _reference_logits(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, features: torch.Tensor, budgets: list[int]
) -> torch.Tensor:
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        token_type_ids=torch.zeros_like(ids),
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
        max_new_tokens=max(budgets),
        stopping_criteria=StoppingCriteriaList([RowBudgets(ids.shape[1], budgets, ids.device)]),
        do_sample=False,
        pad_token_id=PAD,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return torch.stack(out.logits, 1)


def test_a_text_tower_not_on_eager_attention_is_refused() -> None:
    model = _windowed_model()
    model.config.get_text_config()._attn_implementation = "flex_attention"
    try:
        with pytest.raises(ModelLoadError, match="eager"):
            StaticLoop(model, pad_token_id=PAD, eos_token_ids=[EOS])
    finally:
        model.config.get_text_config()._attn_implementation = "eager"


def test_batch_buckets_are_powers_of_two_up_to_the_batch_size() -> None:
    assert default_batch_buckets(1) == (1,)
    assert default_batch_buckets(8) == (1, 2, 4, 8)
    assert default_batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)


# --- attention per tower and the setting ----------------------------------------------------


def test_siglip_on_sdpa_and_gemma_on_eager_give_eagers_tokens() -> None:
    loaded = load_model(demo_settings())
    config = loaded.model.config
    assert config.vision_config._attn_implementation == "sdpa"
    assert config.text_config._attn_implementation == "eager"
    eager = PaliGemmaForConditionalGeneration.from_pretrained(
        demo_settings().model_id, attn_implementation="eager"
    ).eval()
    _, tokens, pixels, _, budgets = _demo_batch(6)
    with torch.inference_mode():
        ours = loaded.model.model.get_image_features(pixel_values=pixels).pooler_output
        theirs = eager.model.get_image_features(pixel_values=pixels).pooler_output
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        assert torch.equal(
            _reference(loaded.model, ids, mask, ours, budgets),
            _reference(eager, ids, mask, theirs, budgets),
        )


REFUSED = "GENERATION_LOOP: Input should be 'transformers' or 'static'"


def test_generation_loop_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineSettings(_env_file=None).generation_loop == "transformers"
    monkeypatch.setenv("GENERATION_LOOP", "static")
    assert EngineSettings(_env_file=None).generation_loop == "static"
    monkeypatch.setenv("GENERATION_LOOP", "fast-please")
    with pytest.raises(ValidationError) as refused:
        EngineSettings(_env_file=None)
    assert describe_errors(refused.value, EngineSettings) == REFUSED


def test_the_cli_refuses_an_unknown_generation_loop_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    picture = tmp_path / "p.png"
    picture.write_bytes(_pictures(1)[0])
    monkeypatch.setenv("GENERATION_LOOP", "fast-please")
    assert cli.main(["caption", str(picture), "--model", str(DEMO_MODEL)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: bad configuration: {REFUSED}\n"


def test_the_worker_refuses_an_unknown_generation_loop_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GENERATION_LOOP", "fast-please")
    assert worker_main.main([]) == 2
    assert [r.getMessage() for r in caplog.records] == [f"bad configuration: {REFUSED}"]
