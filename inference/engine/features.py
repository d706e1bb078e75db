"""Image features per picture, kept on the worker so that a follow-up on the same
picture (Ask or Detect after Describe, see `bot.followups`) skips the vision tower.

The engine runs PaliGemma's vision tower and projector itself (`ImageFeatures.of`) and
hands the result to `generate` as `mm_encoder_outputs`, the pre-computed-encoder input
transformers 5 generation accepts for vision-language models; what `generate` would have
computed from `pixel_values` is the same tensor, so outputs do not change. Features are
keyed by the picture's digest (the hash of its bytes, the same id the bot's picture
store uses), least recently used dropped first, bounded in bytes
(`FEATURE_CACHE_MAX_BYTES`). They stay on the model's device: a 3B-448 picture's
features are 1,024 x 2,304 bf16 values (4.5 MiB), cheap to keep and to reuse in place.

A worker only sees its own pictures: with several workers a follow-up gains only when it
reaches the worker that ran the first request. Used from the engine thread only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

log = logging.getLogger(__name__)


class FeatureCache:
    """Tensors by key, most recently used kept, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: str) -> torch.Tensor | None:
        """The kept tensor, now the most recently used; counts a hit or a miss."""
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: str, value: torch.Tensor) -> None:
        """Keep `value` (a tensor of its own, not a view into a batch), dropping the least
        recently used until it fits; one larger than the whole budget is not kept."""
        size = value.numel() * value.element_size()
        if size > self._max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.numel() * old.element_size()
        while self._items and self._bytes + size > self._max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= dropped.numel() * dropped.element_size()
        self._items[key] = value
        self._bytes += size

    def clear(self) -> None:
        """Forget every item and the counts."""
        self._items.clear()
        self._bytes = 0
        self.hits = self.misses = 0


Tower = Callable[[torch.Tensor], torch.Tensor]  # pixels (n, 3, h, w) -> features (n, t, d)


class ImageFeatures:
    """The features for a chunk's pictures: kept ones reused, the rest computed in one
    call of the vision tower (a picture twice in one chunk is computed once)."""

    def __init__(self, tower: Tower, cache: FeatureCache) -> None:
        self._tower = tower
        self.cache = cache

    def of(
        self, digests: Sequence[str], pixels: Callable[[list[int]], torch.Tensor]
    ) -> torch.Tensor:
        """(len(digests), tokens, hidden) features; `pixels(rows)` gives the batch tensor
        of those rows' pictures, on the device, and is called only for pictures not kept."""
        found: dict[str, torch.Tensor] = {}
        missing: dict[str, int] = {}  # digest -> the first row holding that picture
        for row, digest in enumerate(digests):
            if digest in found or digest in missing:
                continue
            kept = self.cache.get(digest)
            if kept is None:
                missing[digest] = row
            else:
                found[digest] = kept
        if missing:
            computed = self._tower(pixels(list(missing.values())))
            for n, digest in enumerate(missing):
                # clone: a row of `computed` is a view that would pin the whole batch.
                found[digest] = computed[n].clone()
                self.cache.put(digest, found[digest])
        if found and len(missing) < len(digests):
            log.debug(
                "image features: %d of %d pictures reused",
                len(digests) - len(missing),
                len(digests),
            )
        return torch.stack([found[d] for d in digests])
