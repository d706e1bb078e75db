"""Build an offline PaliGemma 2 tokenizer, processor and tiny model from nothing.

Everything here uses the real transformers classes (GemmaTokenizerFast, PaliGemmaProcessor,
PaliGemmaForConditionalGeneration with a Gemma 2 text config and a SigLIP vision config),
so the checkpoint this produces loads through exactly the code path a hub checkpoint does.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GemmaTokenizerFast,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
)
from transformers.models.siglip import SiglipImageProcessorPil

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"]
LOC_TOKENS = [f"<loc{i:04d}>" for i in range(1024)]
SEG_TOKENS = [f"<seg{i:03d}>" for i in range(128)]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

# 112 px in 14 px patches (SigLIP's patch size): 64 image tokens, each patch detailed
# enough to tell a circle's edge from a square's.
IMAGE_SIZE = 112
PATCH_SIZE = 14
TEXT_HIDDEN = 128


def build_tokenizer(corpus: Iterable[str], vocab_words: int = 320) -> GemmaTokenizerFast:
    """Train a small BPE on the demo corpus and wrap it as a Gemma tokenizer.

    Ids follow Gemma's layout for the specials (pad 0, eos 1, bos 2, unk 3); byte
    fallback tokens make any text encodable, so unseen words never crash the model.
    """
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    # Punctuation stays its own token: otherwise "circle?" (in questions) and "circle" (in
    # detect prompts and captions) are unrelated tokens, and what the model learns about
    # one shape name from boxes never reaches the colour question about it.
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern="▁", behavior="merged_with_next"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    fixed = SPECIAL_TOKENS + LOC_TOKENS + SEG_TOKENS + BYTE_TOKENS
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789.,;?!'-▁\n")
    trainer = trainers.BpeTrainer(
        vocab_size=len(fixed) + len(alphabet) + vocab_words,
        special_tokens=fixed,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        bpe.save(str(path))
        data = json.loads(path.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]
    ]
    tok = GemmaTokenizerFast(vocab=vocab, merges=merges)
    # "\n" separates prompt from answer; keep it one token that normalisation cannot touch.
    tok.add_tokens(["\n", *LOC_TOKENS, *SEG_TOKENS])
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.padding_side = "left"
    return tok


def build_processor(
    tokenizer: GemmaTokenizerFast, image_size: int = IMAGE_SIZE, patch_size: int = PATCH_SIZE
) -> PaliGemmaProcessor:
    """A SigLIP-normalised square-resize processor like PaliGemma's (demo size by default)."""
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_resize=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor.image_seq_length = (image_size // patch_size) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_config(vocab_size: int, image_token_id: int, pad_id: int) -> PaliGemmaConfig:
    """A PaliGemma 2 config with the real architecture families at toy sizes."""
    text_config: dict[str, Any] = {
        "model_type": "gemma2",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "max_position_embeddings": 512,
        "sliding_window": 256,
        "query_pre_attn_scalar": 32,
        "pad_token_id": pad_id,
        "bos_token_id": 2,
        "eos_token_id": 1,
        # Untied, so a location token just emitted does not pull its own logit up: tied
        # tiny models learn to repeat the previous <loc> instead of reading the image.
        "tie_word_embeddings": False,
    }
    vision_config: dict[str, Any] = {
        "model_type": "siglip_vision_model",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "projection_dim": TEXT_HIDDEN,
        "num_image_tokens": (IMAGE_SIZE // PATCH_SIZE) ** 2,
    }
    return PaliGemmaConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=image_token_id,
        vocab_size=vocab_size,
        projection_dim=TEXT_HIDDEN,
        hidden_size=TEXT_HIDDEN,
        pad_token_id=pad_id,
        bos_token_id=2,
        eos_token_id=1,
        tie_word_embeddings=False,
    )


def _sinusoid(values: torch.Tensor, dims: int) -> torch.Tensor:
    """[sin, cos] features of `values` (in location bins) at `dims // 2` wavelengths."""
    wavelengths = torch.logspace(math.log10(8.0), math.log10(4096.0), dims // 2)
    angles = values[:, None] * (2 * math.pi / wavelengths)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def build_model(tokenizer: GemmaTokenizerFast, seed: int = 0) -> PaliGemmaForConditionalGeneration:
    """A randomly initialised tiny PaliGemma 2 whose coordinates start out aligned.

    Three initialisations make detection learnable in minutes on a CPU, without changing
    the architecture: each location token's embedding (input and output) is a sinusoid of
    its bin, twice over; each image patch's position embedding is the same sinusoid of
    its row centre (first half) and column centre (second half); and the projector starts
    as the identity. A patch's position then already "points at" the location tokens of
    its row and column, and a box that is off by one bin is a small error.
    """
    torch.manual_seed(seed)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config = build_config(len(tokenizer), image_token_id, tokenizer.pad_token_id)
    model = PaliGemmaForConditionalGeneration(config)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    grid = IMAGE_SIZE // PATCH_SIZE
    half = TEXT_HIDDEN // 2
    with torch.no_grad():
        ids = tokenizer.convert_tokens_to_ids(LOC_TOKENS)
        loc = _sinusoid(torch.arange(1024, dtype=torch.float32), half).repeat(1, 2)
        emb[ids] = loc * (emb.std() / loc.std())
        if head.data_ptr() != emb.data_ptr():
            head[ids] = loc * (head.std() / loc.std())

        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * 1024 / grid
        rows = _sinusoid(centres.repeat_interleave(grid), half)
        cols = _sinusoid(centres.repeat(grid), half)
        pos = model.model.vision_tower.embeddings.position_embedding.weight
        table = torch.cat([rows, cols], dim=1)
        pos.copy_(table * (pos.std() / table.std()))

        projector = model.model.multi_modal_projector.linear
        projector.weight.copy_(torch.eye(TEXT_HIDDEN))
        projector.bias.zero_()
    return model
