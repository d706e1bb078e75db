"""Model inputs: one request's tensors made ahead of the device, a chunk of them joined
into one generate call, and each row stopped at its own token budget.

The CPU work of a request (decode, reduce, square resize, tokenise) is
`encoding.Encoding.encode`, run by `encoding.PreparePool` while the previous batch
generates. `inputs_from_processor` derives what it needs from the checkpoint's processor
and checks, once at start-up, that the result is exactly what the processor makes.
`collate` joins a chunk's tokens with left padding (right-padded rows drift from what the
same request gives alone); `stack_pixels` copies the 8-bit pictures to the device through
pinned memory on CUDA (an asynchronous DMA, a quarter of the bytes of float32), where
`Normaliser` turns them into the model's input. `RowBudgets` ends each row at its own
budget: a 32-token caption batched with a 200-token description stops at 32, and the call
ends as soon as every row has reached its budget or its end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteria

from inference.display import DisplayPicture
from inference.engine.encoding import Encoded, EncodeSpec, Encoding
from inference.errors import ModelLoadError


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One request's tensors, and what its answer needs."""

    input_ids: torch.Tensor  # (prompt tokens,): image placeholders, <bos>, prompt, "\n"
    pixels: torch.Tensor  # uint8 (side, side, 3); `Normaliser` makes the model's input
    digest: str  # the picture's id: the image-feature cache's key
    original_size: tuple[int, int]  # detections are scaled back to this
    display: DisplayPicture | None = None  # sent back with answers drawn on the picture

    @classmethod
    def of(cls, encoded: Encoded) -> ModelInput:
        # from_numpy shares the arrays: no copy, and no torch operation that would start
        # an OpenMP team in the preparing thread (one per calling thread, competing with
        # the engine thread's team for the cores).
        return cls(
            input_ids=torch.from_numpy(encoded.input_ids),
            pixels=torch.from_numpy(encoded.pixels),
            digest=encoded.digest,
            original_size=encoded.original_size,
            display=encoded.display,
        )


class Normaliser:
    """The processor's rescale and normalise, on the device: 8-bit RGB in, the model's
    (n, 3, side, side) input out, with the same float arithmetic as transformers'
    NumPy path (rescale in float64, then float32), so the values are identical."""

    def __init__(self, processor: Any) -> None:
        ip = processor.image_processor
        self._scale = float(ip.rescale_factor) if ip.do_rescale else None
        self._mean = list(ip.image_mean) if ip.do_normalize else None
        self._std = list(ip.image_std) if ip.do_normalize else None

    def __call__(self, pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        values = pixels.permute(0, 3, 1, 2)
        if self._scale is not None:
            values = (values.to(torch.float64) * self._scale).to(torch.float32)
        else:
            values = values.to(torch.float32)
        if self._mean is not None and self._std is not None:
            shape = (1, len(self._mean), 1, 1)
            mean = torch.tensor(self._mean, dtype=torch.float32, device=values.device)
            std = torch.tensor(self._std, dtype=torch.float32, device=values.device)
            values = (values - mean.view(shape)) / std.view(shape)
        return values.to(dtype).contiguous()


PROBE_PROMPT = "answer en what is written on the sign?"


def spec_from_processor(
    processor: Any, *, target_size: int, max_image_bytes: int, max_image_pixels: int
) -> EncodeSpec:
    """What a preparing process needs to do the processor's work for one request."""
    ip = processor.image_processor
    side = (int(ip.size["width"]), int(ip.size["height"])) if ip.do_resize else None
    tokenizer = processor.tokenizer
    prefix = processor.image_token * int(processor.image_seq_length) + tokenizer.bos_token
    # Whether the processor's tokenizer call adds the tokenizer's own specials (a Gemma
    # tokenizer's template adds <bos>) is read off the processor, not assumed.
    reference = processor(images=[_probe_picture()], text=["<image>" + PROBE_PROMPT])
    wanted = list(reference["input_ids"][0])
    backend = tokenizer.backend_tokenizer
    text = prefix + PROBE_PROMPT + "\n"
    matches = [f for f in (False, True) if backend.encode(text, add_special_tokens=f).ids == wanted]
    if not matches:
        raise ModelLoadError("The checkpoint's prompt layout is not PaliGemma's; cannot serve it.")
    return EncodeSpec(
        tokenizer_json=backend.to_str(),
        prefix=prefix,
        add_special_tokens=matches[0],
        side=side,
        resample=int(ip.resample),
        target_size=target_size,
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
    )


def check_against_processor(encoding: Encoding, normaliser: Normaliser, processor: Any) -> None:
    """Refuse a checkpoint whose processor this path does not reproduce value for value
    (a crop, another tokenizer layout): its answers would quietly drift. The probe is
    ordinary text, where reading the prompt as text (`Encoding.token_ids`) must give the
    processor's very ids; they differ only where a user spells a token of the model's."""
    sample = _probe_picture()
    reference = processor(images=[sample], text=["<image>" + PROBE_PROMPT], return_tensors="pt")
    ids = torch.from_numpy(encoding.token_ids(PROBE_PROMPT))
    pixels = normaliser(torch.from_numpy(encoding.square(sample))[None], torch.float32)
    if not torch.equal(ids, reference["input_ids"][0]):
        raise ModelLoadError("The checkpoint's prompt layout is not PaliGemma's; cannot serve it.")
    if not torch.equal(pixels, reference["pixel_values"]):
        raise ModelLoadError(
            "The checkpoint's image preprocessing is not one Palicord reproduces "
            "(resize, rescale, normalise); cannot serve it."
        )


def _probe_picture() -> Image.Image:
    """Noise of an odd size: every resize and rounding path shows in it."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8))


def collate(
    inputs: Sequence[ModelInput], *, pad_token_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The chunk's token tensors, left-padded, on `device` (what the processor gives for
    the same chunk with padding="longest"; pixels are `stack_pixels`' business)."""
    longest = max(len(i.input_ids) for i in inputs)
    ids = torch.full((len(inputs), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), longest), dtype=torch.long)
    for row, item in enumerate(inputs):
        ids[row, longest - len(item.input_ids) :] = item.input_ids
        mask[row, longest - len(item.input_ids) :] = 1
    # Every prompt token belongs to the bidirectional prefix (type 0); generated ones are
    # typed 1 by PaliGemma's own generation update.
    tokens = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {name: to_device(t, device) for name, t in tokens.items()}


def stack_pixels(pixels: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The 8-bit pictures as one (n, side, side, 3) tensor on `device`."""
    first = pixels[0]
    pinned = device.type == "cuda"
    out = torch.empty((len(pixels), *first.shape), dtype=first.dtype, pin_memory=pinned)
    torch.stack(list(pixels), out=out)
    return out.to(device, non_blocking=pinned)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; from pinned memory on CUDA, so the copy does not block."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class RowBudgets(StoppingCriteria):  # type: ignore[misc]  # transformers is untyped
    """Marks each row done once it has generated its own number of tokens."""

    def __init__(self, prompt_len: int, budgets: Sequence[int], device: torch.device) -> None:
        self._prompt_len = prompt_len
        self._budgets = torch.tensor(list(budgets), device=device)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self._prompt_len
        return generated >= self._budgets
