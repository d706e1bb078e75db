"""PaliGemma 2 behind `Engine`: batched, greedy generation for mixed tasks, with the CPU
work done ahead (`prepare`) and the vision tower skipped for pictures seen recently.

A request goes through two steps. `prepare` (while the previous batch generates) has the
preparing processes (`encoding.PreparePool`) decode, reduce and square the picture,
tokenise the prompt (the user's words as text: never control tokens), and hash the bytes.
`generate` (the engine thread) sorts the requests by token budget, then for each chunk
gets the image features (`features.ImageFeatures`: kept ones reused, the rest normalised
on the device and run through the vision tower), joins the token tensors
(`inputs.collate`) and calls `generate` with the features as `mm_encoder_outputs` (or,
with `GENERATION_LOOP=static`, `static_loop.StaticLoop`, which gives the same tokens with
fixed-shape decode steps). Each row stops at its own budget (`inputs.RowBudgets`) and is
decoded cut at that budget. A chunk whose generation fails raises; the worker's runner
retries it in halves until the failing row stands alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import StoppingCriteriaList
from transformers.modeling_outputs import BaseModelOutputWithPooling

from inference.detection import parse_detections
from inference.engine.encoding import Encoded, PreparePool
from inference.engine.features import FeatureCache, ImageFeatures
from inference.engine.inputs import (
    ModelInput,
    Normaliser,
    RowBudgets,
    check_against_processor,
    collate,
    spec_from_processor,
    stack_pixels,
)
from inference.engine.loading import LoadedModel, load_model
from inference.engine.masks import MaskDecoder, mask_decoder_for, segment_results
from inference.engine.static_loop import StaticLoop, default_batch_buckets, eos_token_ids
from inference.errors import PalicordError
from inference.settings import EngineSettings, GenerationLoop
from inference.tasks import InferenceRequest, InferenceResult, Task, TaskSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Row:
    index: int  # in the request list
    spec: TaskSpec
    input: ModelInput


class PaliGemmaEngine:
    """Runs PaliGemma 2 on batches of mixed requests.

    Greedy decoding with left padding makes each output equal to what the request gives
    alone, so requests are batched freely. Requests are sorted by token budget before
    they are cut into chunks of `max_batch_size`, so neighbours have similar budgets, and
    each row stops at its own budget within a chunk.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch_size: int,
        max_image_bytes: int,
        max_image_pixels: int,
        feature_cache_max_bytes: int = 0,
        prepare_processes: int = 0,
        decode_timeout_s: float | None = None,
        torch_threads: int | None = None,
        generation_loop: GenerationLoop = "transformers",
        mask_decoder: MaskDecoder | None = None,
    ) -> None:
        self._loaded = loaded
        self._masks = mask_decoder
        self._threads = cpu_threads(loaded.device, torch_threads)
        self._max_batch_size = max_batch_size
        spec = spec_from_processor(
            loaded.processor,
            target_size=loaded.image_size,
            max_image_bytes=max_image_bytes,
            max_image_pixels=max_image_pixels,
        )
        self._pool = PreparePool(spec, prepare_processes, decode_timeout_s)
        self._normalise = Normaliser(loaded.processor)
        check_against_processor(self._pool.local, self._normalise, loaded.processor)
        self._pad_token_id = int(loaded.processor.tokenizer.pad_token_id)
        self.features = ImageFeatures(self._vision_tower, FeatureCache(feature_cache_max_bytes))
        # The model's generate calls so far, warm-up included: what a failing row costs its
        # batch shows here (bench/hostile.py reads it before and after a batch).
        self.generate_calls = 0
        self._static: StaticLoop | None = None
        if generation_loop == "static":
            on_cuda = loaded.device.type == "cuda"
            self._static = StaticLoop(
                loaded.model,
                pad_token_id=self._pad_token_id,
                eos_token_ids=eos_token_ids(loaded.model),
                batch_buckets=default_batch_buckets(max_batch_size) if on_cuda else None,
            )

    @classmethod
    def from_settings(cls, settings: EngineSettings) -> PaliGemmaEngine:
        """Load the configured checkpoint and build an engine around it."""
        loaded = load_model(settings)
        return cls(
            loaded,
            max_batch_size=settings.batch_size,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            feature_cache_max_bytes=settings.feature_cache_max_bytes,
            prepare_processes=settings.prepare_processes,
            decode_timeout_s=settings.decode_timeout_s,
            torch_threads=settings.torch_threads,
            generation_loop=settings.generation_loop,
            mask_decoder=mask_decoder_for(settings, loaded.device),
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

    def feature_cache(self) -> dict[str, int]:
        """The image-feature cache's counters (see `Engine.feature_cache`)."""
        cache = self.features.cache
        return {"hits": cache.hits, "misses": cache.misses, "bytes": cache.bytes_used}

    def warmup(self) -> None:
        """Start the preparing processes and run one tiny generation, so the first user
        request pays no start-up costs. Call it on the thread that will generate: on the
        CPU it sets that thread's number of torch threads (OpenMP's count is per thread)."""
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        self._pool.start()
        blank = Image.new("RGB", (self.image_size, self.image_size), (128, 128, 128))
        spec = TaskSpec.build(Task.CAPTION, max_new_tokens=2)
        local = self._pool.local
        # A digest no picture hashes to; the blank's features (and its miss) are forgotten.
        encoded = Encoded(local.token_ids(spec.prompt()), local.square(blank), blank.size, "-")
        self._run_chunk([_Row(0, spec, ModelInput.of(encoded))])
        self.features.cache.clear()
        log.info("warm-up done")

    def close(self) -> None:
        """Stop the preparing processes."""
        self._pool.close()

    def prepare(self, requests: Sequence[InferenceRequest]) -> list[InferenceRequest]:
        """Decode, reduce, resize and tokenise each request ahead of generation, in the
        preparing processes (see `Engine.prepare`)."""
        todo = [r for r in requests if r.prepared is None]
        encoded = iter(self._pool.encode([(r.image, r.spec.prompt()) for r in todo]))
        return [r if r.prepared is not None else _prepared(r, next(encoded)) for r in requests]

    def generate(self, requests: Sequence[InferenceRequest]) -> list[InferenceResult]:
        """One result per request, in order; bad images fail only their own request. A
        failing generation raises: `inference.worker.runner.generate_resilient` is the one
        policy that isolates the row behind it."""
        results: list[InferenceResult | None] = [None] * len(requests)
        rows: list[_Row] = []
        for i, req in enumerate(self.prepare(requests)):
            if isinstance(req.prepared, ModelInput):
                rows.append(_Row(i, req.spec, req.prepared))
            elif isinstance(req.prepared, PalicordError):
                results[i] = _error(req.spec.task, req.prepared)
            else:
                raise TypeError(f"request prepared by another engine: {type(req.prepared)!r}")
        rows.sort(key=lambda r: r.spec.token_budget)
        for start in range(0, len(rows), self._max_batch_size):
            chunk = rows[start : start + self._max_batch_size]
            for row, result in zip(chunk, self._run_chunk(chunk), strict=True):
                results[row.index] = result
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _vision_tower(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self._loaded.model.model.get_image_features(pixel_values=pixels, return_dict=True)
        return out.pooler_output  # type: ignore[no-any-return]

    @torch.inference_mode()
    def _run_chunk(self, chunk: list[_Row]) -> list[InferenceResult]:
        lm = self._loaded
        inputs = [row.input for row in chunk]
        features = self.features.of(
            [i.digest for i in inputs],
            lambda rows: self._normalise(
                stack_pixels([inputs[r].pixels for r in rows], lm.device), lm.dtype
            ),
        )
        tokens = collate(inputs, pad_token_id=self._pad_token_id, device=lm.device)
        prompt_len = tokens["input_ids"].shape[1]
        budgets = [row.spec.token_budget for row in chunk]
        self.generate_calls += 1
        if self._static is not None:
            new_tokens = self._static.generate(
                tokens["input_ids"], tokens["attention_mask"], features, budgets
            ).cpu()
        else:
            output = lm.model.generate(
                **tokens,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
                max_new_tokens=max(budgets),
                stopping_criteria=StoppingCriteriaList(
                    [RowBudgets(prompt_len, budgets, lm.device)]
                ),
                do_sample=False,
                num_beams=1,
                pad_token_id=self._pad_token_id,
            )
            new_tokens = output[:, prompt_len:]
        results = []
        for row, generated in zip(chunk, new_tokens, strict=True):
            # Greedy decoding: cutting a longer run at this request's own budget gives
            # exactly the tokens it would have produced alone.
            text = lm.processor.decode(generated[: row.spec.token_budget], skip_special_tokens=True)
            results.append(_finish(row, text.strip(), self._masks))
        return results


def cpu_threads(device: torch.device, requested: int | None) -> int | None:
    """Torch threads for generation on the CPU: as requested, else one core left free for
    the worker's own work; None on an accelerator (its host threads only launch kernels)."""
    if device.type != "cpu":
        return None
    return requested or max(1, (os.cpu_count() or 1) - 1)


def _prepared(request: InferenceRequest, encoded: Encoded | PalicordError) -> InferenceRequest:
    if isinstance(encoded, PalicordError):
        return dataclasses.replace(request, prepared=encoded)
    return dataclasses.replace(request, prepared=ModelInput.of(encoded), digest=encoded.digest)


def _finish(row: _Row, text: str, masks: MaskDecoder | None) -> InferenceResult:
    width, height = row.input.original_size
    if row.spec.task is Task.DETECT:
        detections = tuple(parse_detections(text, width, height))
        return InferenceResult(row.spec.task, text, detections, display=row.input.display)
    if row.spec.task is Task.SEGMENT:
        segments, note = segment_results(masks, text, width, height)
        return InferenceResult(row.spec.task, text, segments, display=row.input.display, note=note)
    return InferenceResult(row.spec.task, text)


def _error(task: Task, exc: PalicordError) -> InferenceResult:
    return InferenceResult(task, "", error=exc.code, error_message=exc.message)
