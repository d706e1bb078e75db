"""PaliGemma 2 behind `Engine`: load a checkpoint (hub id or local directory) with the
right device, dtype and optional bitsandbytes quantisation, then run batched, greedy
generation for mixed tasks."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoProcessor, PaliGemmaForConditionalGeneration

from inference.detection import parse_detections
from inference.engine.base import is_fatal_device_error, is_out_of_memory
from inference.errors import GenerationError, ModelLoadError, PalicordError, QuantizationUnavailable
from inference.intake import LoadedImage, load_image
from inference.settings import EngineSettings
from inference.tasks import InferenceRequest, InferenceResult, Task, TaskSpec

log = logging.getLogger(__name__)


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
    """The requested device, else CUDA when present, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        processor = AutoProcessor.from_pretrained(source, **common)
        model = PaliGemmaForConditionalGeneration.from_pretrained(
            source, dtype=dtype, **common, **quant
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


@dataclass(frozen=True, slots=True)
class _Prepared:
    index: int
    spec: TaskSpec
    image: Image.Image
    original_size: tuple[int, int]


class PaliGemmaEngine:
    """Runs PaliGemma 2 on batches of mixed requests.

    Greedy decoding with left padding makes each output equal to what the request gives
    alone, so requests are batched freely. Requests are grouped by token budget, so a
    32-token caption never waits behind a 200-token description in one generate call.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int,
        max_image_bytes: int,
        max_image_pixels: int,
    ) -> None:
        self._loaded = loaded
        self._max_batch_size = max_batch_size
        self._max_image_bytes = max_image_bytes
        self._max_image_pixels = max_image_pixels

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> PaliGemmaEngine:
        """Load the configured checkpoint and build an engine around it."""
        return cls(
            load_model(settings),
            max_batch_size=settings.batch_size,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        )

    @property
    def model_id(self) -> str:
        return self._loaded.model_id

    @property
    def image_size(self) -> int:
        return self._loaded.image_size

    @property
    def capabilities(self) -> frozenset[Task]:
        return frozenset(Task)

    def device_memory(self) -> dict[str, int]:
        """CUDA memory in use and reserved by torch's allocator on this engine's device."""
        device = self._loaded.device
        if device.type != "cuda":
            return {}
        return {
            "allocated": int(torch.cuda.memory_allocated(device)),
            "reserved": int(torch.cuda.memory_reserved(device)),
        }

    def warmup(self) -> None:
        """Run one tiny generation so the first user request pays no start-up costs."""
        blank = Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))
        spec = TaskSpec.build(Task.CAPTION, max_new_tokens=2)
        self._run_chunk([_Prepared(0, spec, blank, blank.size)])
        log.info("warm-up done")

    def prepare(self, requests: Sequence[InferenceRequest]) -> list[InferenceRequest]:
        """Decode and resize each image ahead of generation (see `Engine.prepare`)."""
        return [dataclasses.replace(r, prepared=self._load(r)) for r in requests]

    def _load(self, request: InferenceRequest) -> LoadedImage | PalicordError:
        if isinstance(request.prepared, LoadedImage | PalicordError):
            return request.prepared
        try:
            return load_image(
                request.image,
                max_bytes=self._max_image_bytes,
                max_pixels=self._max_image_pixels,
                target_size=self.image_size,
            )
        except PalicordError as exc:
            return exc

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        """One result per request, in order; bad images fail only their own request."""
        results: list[InferenceResult | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for i, req in enumerate(requests):
            loaded = self._load(req)
            if isinstance(loaded, PalicordError):
                results[i] = _error(req.spec.task, loaded)
                continue
            prepared.append(_Prepared(i, req.spec, loaded.image, loaded.original_size))
        prepared.sort(key=lambda p: p.spec.token_budget)
        for start in range(0, len(prepared), self._max_batch_size):
            chunk = prepared[start : start + self._max_batch_size]
            for p, result in zip(chunk, self._run_isolated(chunk), strict=True):
                results[p.index] = result
        return [r for r in results if r is not None]

    def _run_isolated(self, chunk: list[_Prepared]) -> list[InferenceResult]:
        try:
            return self._run_chunk(chunk)
        except Exception as exc:
            # Out-of-memory: the worker owns the retry-smaller policy; fatal: it exits.
            if is_out_of_memory(exc) or is_fatal_device_error(exc):
                raise
            if len(chunk) == 1:
                log.exception("generation failed for one request")
                return [_error(chunk[0].spec.task, GenerationError())]
            log.warning("batch of %d failed (%s); retrying one by one", len(chunk), exc)
            return [r for p in chunk for r in self._run_isolated([p])]

    @torch.inference_mode()
    def _run_chunk(self, chunk: list[_Prepared]) -> list[InferenceResult]:
        lm = self._loaded
        inputs = lm.processor(
            images=[p.image for p in chunk],
            text=["<image>" + p.spec.prompt() for p in chunk],
            return_tensors="pt",
            padding="longest",
        )
        inputs.pop("labels", None)
        inputs = inputs.to(lm.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(lm.dtype)
        budget = max(p.spec.token_budget for p in chunk)
        output = lm.model.generate(
            **inputs,
            max_new_tokens=budget,
            do_sample=False,
            num_beams=1,
            pad_token_id=lm.processor.tokenizer.pad_token_id,
        )
        prompt_len = inputs["input_ids"].shape[1]
        results = []
        for p, row in zip(chunk, output[:, prompt_len:], strict=True):
            # Greedy decoding: cutting a longer run at this request's own budget gives
            # exactly the tokens it would have produced alone.
            text = lm.processor.decode(row[: p.spec.token_budget], skip_special_tokens=True)
            results.append(_finish(p, text.strip()))
        return results


def _finish(p: _Prepared, text: str) -> InferenceResult:
    if p.spec.task is Task.DETECT:
        width, height = p.original_size
        return InferenceResult(p.spec.task, text, tuple(parse_detections(text, width, height)))
    return InferenceResult(p.spec.task, text)


def _error(task: Task, exc: PalicordError) -> InferenceResult:
    return InferenceResult(task, "", error=exc.code, error_message=exc.message)
