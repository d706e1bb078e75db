"""Loading a PaliGemma 2 checkpoint (hub id or local directory) onto its device with the
right dtype, attention implementation and optional bitsandbytes quantisation; library
failures become `ModelLoadError` / `QuantizationUnavailable` with messages fit for the
operator's log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

from inference.errors import ModelLoadError, QuantizationUnavailable
from inference.settings import EngineSettings

log = logging.getLogger(__name__)

# Per tower: SigLIP on torch's fused attention; Gemma 2 on eager, the one implementation
# that applies its attention soft-cap with PaliGemma's prefix-LM mask (sdpa has no
# soft-cap, flash drops the mask) and the one `static_loop` needs. Same outputs as eager
# everywhere on the CPU (tests/engine/test_static_loop.py).
ATTENTION = {"vision_config": "sdpa", "text_config": "eager"}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model on its device with its processor and the input resolution it expects."""

    model: PaliGemmaForConditionalGeneration
    processor: Any  # PaliGemmaProcessor; transformers ships no type stubs
    device: torch.device
    dtype: torch.dtype
    image_size: int
    model_id: str


def pick_device(requested: str | None) -> torch.device:
    """The requested device, else CUDA when present, else CPU. A DEVICE this machine
    cannot use is refused here, in words, not by torch at the model's first move."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ModelLoadError("DEVICE must be a torch device, such as cpu, cuda or cuda:1") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError("DEVICE names a CUDA GPU that this machine does not have")
    return device


def image_size_of(processor: Any) -> int:
    """The square input side from the checkpoint's processor config (224/448/896...)."""
    size = processor.image_processor.size
    height = size.get("height") if hasattr(size, "get") else getattr(size, "height", None)
    if not height:
        raise ModelLoadError("The checkpoint's image processor does not declare an input size.")
    return int(height)


def _quantization_kwargs(settings: EngineSettings, device: torch.device) -> dict[str, Any]:
    if settings.quantization == "none":
        return {}
    if device.type != "cuda":
        raise QuantizationUnavailable(
            f"QUANTIZATION={settings.quantization} needs a CUDA GPU; this worker runs on "
            f"{device.type}. Set QUANTIZATION=none."
        )
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as exc:
        raise QuantizationUnavailable(
            "QUANTIZATION needs the bitsandbytes package (pip install 'palicord[worker]')."
        ) from exc
    if settings.quantization == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
    # bitsandbytes places the weights itself; .to(device) on a quantised model is an error.
    return {"quantization_config": config, "device_map": {"": device.index or 0}}


def load_model(settings: EngineSettings) -> LoadedModel:
    """Load processor and model; translate library failures into ModelLoadError."""
    device = pick_device(settings.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    quant = _quantization_kwargs(settings, device)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    source = settings.model_id
    local = Path(source).expanduser()
    if local.is_dir():
        source = str(local)
    common: dict[str, Any] = {"token": token}
    if settings.hf_offline:
        common["local_files_only"] = True
    try:
        # The PIL backend, also where torchvision is installed: the preparing processes
        # reproduce its arithmetic exactly (inference.engine.inputs checks it at start-up),
        # and torchvision's resize rounds differently.
        processor = AutoProcessor.from_pretrained(source, backend="pil", **common)
        model = PaliGemmaForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation=ATTENTION, **common, **quant
        )
    except (OSError, ValueError) as exc:
        # Hub and file errors carry URLs and paths but never the token; keep the cause.
        raise ModelLoadError(f"Could not load model {settings.model_id!r}: {exc}") from exc
    if not quant:
        model = model.to(device)
    model.eval()
    # Batched generation is only correct with left padding: right-padded rows drift from
    # what the same request gives alone (checked on transformers 5.x).
    processor.tokenizer.padding_side = "left"
    size = image_size_of(processor)
    log.info(
        "loaded %s on %s (%s, quantization=%s, input %dpx)",
        settings.model_id,
        device,
        str(dtype).removeprefix("torch."),
        settings.quantization,
        size,
    )
    return LoadedModel(model, processor, device, dtype, size, settings.model_id)
