"""Loading checkpoints: resolution from the processor config, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.engine.loading import load_model
from inference.engine.paligemma import PaliGemmaEngine
from inference.errors import ModelLoadError, QuantizationUnavailable
from tests.support.demo import demo_settings

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


def test_demo_checkpoint_loads_left_padded_in_float32_on_the_cpu() -> None:
    loaded = load_model(demo_settings(device="cpu"))
    assert loaded.image_size == 112
    assert loaded.dtype is torch.float32 and loaded.device.type == "cpu"
    assert loaded.processor.tokenizer.padding_side == "left"
    assert not loaded.model.training


def test_quantisation_on_cpu_is_a_clear_error() -> None:
    with pytest.raises(QuantizationUnavailable, match="needs a CUDA GPU"):
        load_model(demo_settings(quantization="4bit", device="cpu"))


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Could not load model"):
        PaliGemmaEngine.from_settings(demo_settings(model_id=f"{tmp_path}/nope", hf_offline=True))
