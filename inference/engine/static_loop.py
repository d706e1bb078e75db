"""Greedy generation with fixed shapes (`GENERATION_LOOP=static`): one prefill over the
chunk, then a decode step whose tensors never change shape, so that on CUDA it is
captured once per (batch, cache length) bucket as a CUDA graph and replayed.

It runs the checkpoint's own modules (PaliGemma's embeddings, Gemma 2's decoder layers,
its `lm_head` and final soft-cap); what it owns is what `generate` rebuilds every step in
Python: the masks and the cache. The cache is static (`_SlotCache`: per layer one
(batch, kv heads, slots, head dim) buffer, slots = prompt + longest budget, rounded up to
a bucket), written at a position held in a device tensor. The masks reproduce those of
transformers exactly (`masking_utils`): during the prefill every prompt token attends to
every non-pad prompt token (PaliGemma's prefix-LM: all prompt tokens are type 0, one
bidirectional block, which also overrides the sliding window); a generated token attends
causally to the non-pad tokens before it, on Gemma 2's sliding layers only to the last
`sliding_window` slots (pads included, as in transformers' cache). Positions are 1-based
counts of a row's real tokens. Greedy argmax, per-row budgets and end-of-sequence tokens
stay on the device: a finished row is fed the pad token, as `generate` does, so the
tokens are the same as `generate` with `inputs.RowBudgets` (tests/engine/test_static_loop
checks that token for token on the demo model and on a tiny sliding window).

With CUDA graphs the host looks at the device only every `stop_check_steps` steps
(default 8: whether every row has finished, to end the chunk early) and once at the end;
`stop_check_steps=0` never looks before the end. Batch sizes are padded up to
`batch_buckets` (copies of the first row, finished from the start) so graphs are reused.
On the CPU the defaults are what pays there: no padding, no graphs, a look every step
(free), and attention over the slots filled so far rather than all of them
(`fixed_shapes=False`; the tests run both). Gemma 2 must run with eager attention (the
masks are additive float tensors); SigLIP's attention is the vision tower's business.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inference.errors import ModelLoadError

log = logging.getLogger(__name__)

# Cache slots are rounded up to a multiple of this on CUDA, so one graph serves prompts
# and budgets of nearby lengths.
SLOT_STEP = 64
# Every this many decode steps the host asks whether all rows have finished.
STOP_CHECK_STEPS = 8


def eos_token_ids(model: Any) -> list[int]:
    """The end-of-sequence ids `generate` would stop at (its generation config's)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def default_batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below `max_batch_size`, and `max_batch_size` itself."""
    buckets = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return (*buckets, max_batch_size)


class _SlotCache:
    """Gemma 2's key/value cache as fixed buffers (the `Cache.update` its attention calls).

    In the prefill (`at is None`) the prompt's keys are stored in the first slots and
    returned as they are, as transformers' dynamic cache returns them; in a decode step
    they are written at slot `at` (a one-element device tensor) and the whole buffers
    returned, masked by the caller."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys = keys
        self.values = values
        self.at: torch.Tensor | None = None
        self.used: int | None = None  # without graphs: only the slots filled so far

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.at is None:
            keys[:, :, : key.shape[2]] = key
            values[:, :, : value.shape[2]] = value
            return key, value
        keys.index_copy_(2, self.at, key)
        values.index_copy_(2, self.at, value)
        if self.used is not None:
            return keys[:, :, : self.used], values[:, :, : self.used]
        return keys, values


@dataclass
class _State:
    """Everything one decode step reads and writes, at fixed addresses (graph inputs)."""

    cache: _SlotCache
    token: torch.Tensor  # (batch,) the token fed next
    position: torch.Tensor  # (batch, 1) its position id
    at: torch.Tensor  # (1,) its cache slot
    step: torch.Tensor  # (1,) how many tokens each row has generated
    valid: torch.Tensor  # (batch, slots) bool: which slots hold a real token
    done: torch.Tensor  # (batch,) bool
    budget: torch.Tensor  # (batch,) long
    out: torch.Tensor  # (batch, slots) generated tokens, pad once a row is done
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    captured_steps: int = 0  # eager steps run on this state (capture after two)


class StaticLoop:
    """Greedy generation for one PaliGemma 2 model, with fixed-shape decode steps."""

    def __init__(
        self,
        model: Any,
        *,
        pad_token_id: int,
        eos_token_ids: Sequence[int],
        batch_buckets: Sequence[int] | None = None,
        slot_step: int | None = None,
        cuda_graphs: bool | None = None,
        stop_check_steps: int | None = None,
        fixed_shapes: bool | None = None,
    ) -> None:
        text = model.config.get_text_config()
        if text._attn_implementation != "eager":
            raise ModelLoadError(
                "GENERATION_LOOP=static needs Gemma 2 on eager attention; this model's text "
                f"tower uses {text._attn_implementation!r}."
            )
        self._model = model
        self._lm = model.model.language_model
        # transformers renamed the decoder's `past_key_values` to `cache` (5.2x); the
        # GPU image's 5.17 has the old name.
        accepted = inspect.signature(self._lm.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._embed = model.model.get_input_embeddings()
        self._image_token_id = int(model.config.image_token_id)
        self._vocab_size = int(text.vocab_size)
        self._softcap = getattr(text, "final_logit_softcapping", None)
        self._sliding_window = getattr(text, "sliding_window", None)
        self._kv_heads = int(text.num_key_value_heads)
        self._head_dim = int(
            getattr(text, "head_dim", text.hidden_size // text.num_attention_heads)
        )
        self._layers = int(text.num_hidden_layers)
        self._pad = pad_token_id
        self._eos = list(eos_token_ids)
        param = next(model.parameters())
        self.device: torch.device = param.device
        self.dtype: torch.dtype = model.model.language_model.embed_tokens.weight.dtype
        on_cuda = self.device.type == "cuda"
        self._graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self._buckets = tuple(sorted(batch_buckets)) if batch_buckets else ()
        self._slot_step = slot_step or (SLOT_STEP if on_cuda else 1)
        self._fixed_shapes = self._graphs if fixed_shapes is None else fixed_shapes
        # Asking costs a synchronisation on CUDA, nothing on the CPU.
        if stop_check_steps is None:
            stop_check_steps = STOP_CHECK_STEPS if self._graphs else 1
        self._stop_check_steps = stop_check_steps
        self._states: dict[tuple[int, int], _State] = {}
        self._flat: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._pool: Any = None

    def _bucket(self, batch: int) -> int:
        return next((b for b in self._buckets if b >= batch), batch)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        features: torch.Tensor,
        budgets: Sequence[int],
    ) -> torch.Tensor:
        """(batch, max(budgets)) generated tokens: left-padded prompts on the device, one
        picture's features per row, each row ended at its budget or its end-of-sequence
        token and padded after it (what `generate` returns past the prompt)."""
        rows, prompt_len = input_ids.shape
        most = max(budgets)
        batch = self._bucket(rows)
        if batch > rows:  # copies of row 0, finished from the start
            extra = batch - rows
            input_ids = torch.cat([input_ids, input_ids[:1].expand(extra, -1)])
            attention_mask = torch.cat([attention_mask, attention_mask[:1].expand(extra, -1)])
            features = torch.cat([features, features[:1].expand(extra, -1, -1)])
            budgets = [*budgets, *([0] * extra)]
        slots = -(-(prompt_len + most) // self._slot_step) * self._slot_step
        state = self._state(batch, slots)
        self._reset(state, attention_mask, budgets, prompt_len)
        first = self._prefill(state, input_ids, attention_mask, features)
        self._advance(state, first)
        for step in range(1, most):
            if (
                self._stop_check_steps
                and step % self._stop_check_steps == 0
                and bool(state.done.all())
            ):
                break
            self._decode(state, used=None if self._fixed_shapes else prompt_len + step)
        return state.out[:rows, :most].clone()

    # --- state, allocated once per bucket -------------------------------------------------

    def _state(self, batch: int, slots: int) -> _State:
        key = (batch, slots)
        state = self._states.get(key)
        if state is not None:
            return state
        device = self.device
        cache = _SlotCache(*self._cache_views(batch, slots))
        state = _State(
            cache=cache,
            token=torch.zeros(batch, dtype=torch.long, device=device),
            position=torch.zeros((batch, 1), dtype=torch.long, device=device),
            at=torch.zeros(1, dtype=torch.long, device=device),
            step=torch.zeros(1, dtype=torch.long, device=device),
            valid=torch.zeros((batch, slots), dtype=torch.bool, device=device),
            done=torch.zeros(batch, dtype=torch.bool, device=device),
            budget=torch.zeros(batch, dtype=torch.long, device=device),
            out=torch.zeros((batch, slots), dtype=torch.long, device=device),
        )
        if self._graphs:
            self._states[key] = state
        return state

    def _cache_views(self, batch: int, slots: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Views of one flat buffer per layer, shared by every bucket (they run one at a
        time); a larger bucket than any before grows the buffers and drops the graphs."""
        shape = (batch, self._kv_heads, slots, self._head_dim)
        numel = batch * self._kv_heads * slots * self._head_dim
        if self._flat is None or self._flat[0][0].numel() < numel:
            self._states.clear()
            self._flat = None
            self._pool = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            dtype, device = self.dtype, self.device
            self._flat = (
                [torch.zeros(numel, dtype=dtype, device=device) for _ in range(self._layers)],
                [torch.zeros(numel, dtype=dtype, device=device) for _ in range(self._layers)],
            )
        keys, values = self._flat
        return [k[:numel].view(shape) for k in keys], [v[:numel].view(shape) for v in values]

    def _reset(
        self, state: _State, attention_mask: torch.Tensor, budgets: Sequence[int], prompt_len: int
    ) -> None:
        state.valid.zero_()
        state.valid[:, :prompt_len] = attention_mask.bool()
        # 1-based positions of real tokens; a pad sits at 1 (transformers' cumsum rule + 1).
        lengths = attention_mask.sum(-1)
        state.position.copy_(lengths[:, None] + 1)
        state.at.fill_(prompt_len)
        state.step.zero_()
        state.done.zero_()
        state.budget.copy_(torch.tensor(list(budgets), dtype=torch.long))
        state.out.fill_(self._pad)
        state.token.fill_(self._pad)

    # --- the model's steps ----------------------------------------------------------------

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self._model.lm_head(hidden)
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return logits  # type: ignore[no-any-return]

    def _prefill(
        self,
        state: _State,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        features: torch.Tensor,
    ) -> torch.Tensor:
        """Run the prompts, fill the cache's first slots, return each row's first token."""
        is_image = input_ids == self._image_token_id
        ids = (
            input_ids.masked_fill(is_image, 0)
            if self._image_token_id >= self._vocab_size
            else input_ids
        )
        embeds = self._embed(ids)
        features = features.to(embeds.device, embeds.dtype)
        embeds = embeds.masked_scatter(is_image[..., None], features)
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0) + 1
        # One bidirectional block: every query sees every real prompt token.
        seen = attention_mask.bool()[:, None, None, :].expand(-1, 1, input_ids.shape[1], -1)
        mask = self._additive(seen)
        state.cache.at = None
        hidden = self._lm(
            inputs_embeds=embeds,
            attention_mask={"full_attention": mask, "sliding_attention": mask},
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: state.cache},
        ).last_hidden_state
        return self._logits(hidden[:, -1]).argmax(-1)

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(self.dtype).min)

    def _decode_step(self, state: _State, used: int | None = None) -> None:
        """One token per row; fixed shapes, no host synchronisation (capturable). Without
        graphs, `used` (the slots filled, this step's included) narrows attention to them:
        the masked rest adds nothing but work."""
        state.valid.index_fill_(1, state.at, True)
        valid = state.valid if used is None else state.valid[:, :used]
        slots = valid.shape[1]
        full = valid[:, None, None, :]
        masks = {"full_attention": self._additive(full)}
        if self._sliding_window is not None:
            index = torch.arange(slots, device=valid.device)
            recent = index > state.at - self._sliding_window
            masks["sliding_attention"] = self._additive(full & recent)
        else:
            masks["sliding_attention"] = masks["full_attention"]
        state.cache.at = state.at
        state.cache.used = used
        hidden = self._lm(
            inputs_embeds=self._embed(state.token[:, None]),
            attention_mask=masks,
            position_ids=state.position,
            use_cache=True,
            **{self._cache_arg: state.cache},
        ).last_hidden_state
        self._advance(state, self._logits(hidden[:, -1]).argmax(-1))
        state.position.add_(1)
        state.at.add_(1)

    def _advance(self, state: _State, chosen: torch.Tensor) -> None:
        """Record this step's tokens (pad for finished rows) and mark rows that finish."""
        token = torch.where(state.done, self._pad, chosen)
        state.out.index_copy_(1, state.step, token[:, None])
        ended = state.step + 1 >= state.budget
        for eos in self._eos:
            ended = ended | (token == eos)
        state.done.logical_or_(ended)
        state.token.copy_(token)
        state.step.add_(1)

    def _decode(self, state: _State, used: int | None) -> None:
        if not self._graphs:
            self._decode_step(state, used)
            return
        if state.graph is not None:
            state.graph.replay()
            return
        # The first two steps of a new bucket run eagerly on a side stream (CUDA graphs'
        # warm-up: lazy library initialisation happens outside the capture); the third is
        # captured, then replayed for this step and every later one.
        main = torch.cuda.current_stream(self.device)
        stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        stream.wait_stream(main)
        if state.captured_steps < 2:
            with torch.cuda.stream(stream):
                self._decode_step(state)
            main.wait_stream(stream)
            state.captured_steps += 1
            return
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, stream=stream):
            self._decode_step(state)
        main.wait_stream(stream)
        state.graph = graph
        log.debug("captured a decode step for batch %d", state.token.shape[0])
        graph.replay()
