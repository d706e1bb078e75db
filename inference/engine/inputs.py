"""Model inputs: one request's tensors made ahead of the device, a chunk of them joined
into one generate call, and each row stopped at its own token budget.

`encode` is the CPU work of one request (the processor's normalising and tokenising, on a
picture `load_image` already decoded and reduced); the pipelined worker runs it in its
preparation thread while the previous batch generates, so the device never waits for it.
`collate` joins a chunk with left padding (right-padded rows drift from what the same
request gives alone) and stacks the pixels into pinned memory on CUDA, so the copy to the
device is an asynchronous DMA rather than a staged, blocking one.
`RowBudgets` ends each row at its own budget: a 32-token caption batched with a
200-token description stops at 32, and the call ends as soon as every row has either
reached its budget or its end-of-sequence token, rather than at the longest budget.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria

from inference.intake import LoadedImage


@dataclass(frozen=True, slots=True)
class ModelInput:
    """One request's tensors as the processor makes them, and what the answer needs."""

    input_ids: torch.Tensor  # (prompt tokens,): image placeholders, <bos>, prompt, "\n"
    pixel_values: torch.Tensor  # (3, side, side), already in the model's dtype
    digest: str  # the picture's id: the image-feature cache's key
    original_size: tuple[int, int]  # detections are scaled back to this


class Encoder:
    """Runs the checkpoint's processor for one request at a time.

    The processor's fast tokenizer can fail with "Already borrowed" when calls that
    switch its padding or truncation settings overlap in two threads (a known
    tokenizers issue); preparation runs in one thread and decoding on the engine thread,
    so both go through this lock. The calls made here did not fail without it in a
    stress test, so it is insurance: each call holds it for well under a millisecond.
    """

    def __init__(self, processor: Any, dtype: torch.dtype) -> None:
        self._processor = processor
        self._dtype = dtype
        self._lock = threading.Lock()

    @property
    def pad_token_id(self) -> int:
        return int(self._processor.tokenizer.pad_token_id)

    def encode(self, loaded: LoadedImage, prompt: str, digest: str) -> ModelInput:
        """The processor's tensors for one picture and prompt."""
        with self._lock:
            out = self._processor(
                images=[loaded.image], text=["<image>" + prompt], return_tensors="pt"
            )
        return ModelInput(
            input_ids=out["input_ids"][0],
            pixel_values=out["pixel_values"][0].to(self._dtype),
            digest=digest,
            original_size=loaded.original_size,
        )

    def decode(self, tokens: torch.Tensor) -> str:
        """Generated tokens as text, special tokens (loc tokens aside) dropped."""
        with self._lock:
            return str(self._processor.decode(tokens, skip_special_tokens=True)).strip()


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
    """The pictures as one batch tensor on `device`."""
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
