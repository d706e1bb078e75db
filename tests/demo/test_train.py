"""The demo model's training data path: pre-encoded rows batch exactly as the processor does."""

from __future__ import annotations

import random

import pytest
import torch
from PIL import Image

from inference.demo import shapes
from inference.demo.build import IMAGE_SIZE, build_processor, build_tokenizer
from inference.demo.train import Example, collate, corpus, encode_scene, examples_for, patch_targets

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes


def test_collated_rows_equal_the_processors_own_batch() -> None:
    processor = build_processor(build_tokenizer(corpus(40)))
    rng = random.Random(5)
    pixels, batch, texts, suffixes, images = [], [], [], [], []
    for index in range(3):
        scene = shapes.make_scene(rng, size=(rng.randint(128, 320), rng.randint(128, 320)))
        small = scene.image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        pairs = examples_for(scene, rng)
        pixel_values, rows = encode_scene(processor, small, pairs)
        pixels.append(pixel_values)
        targets = patch_targets(scene, 8)
        for (prompt, target), row in zip(pairs, rows, strict=True):
            batch.append(Example(index, patches=targets, **row))
            texts.append("<image>" + prompt)
            suffixes.append(target)
            images.append(small)
    expected = processor(
        images=images, text=texts, suffix=suffixes, return_tensors="pt", padding="longest"
    )
    got = collate(batch, pixels, processor.tokenizer.pad_token_id)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_a_shape_name_is_the_same_token_in_questions_prompts_and_captions() -> None:
    # "circle?" once became its own token, so the colour question never shared what boxes
    # taught the model about "circle".
    tokenizer = build_tokenizer(corpus(40))
    for kind in shapes.SHAPES:
        name = tokenizer.tokenize(f"detect {kind}")[-1]
        assert tokenizer.tokenize(f"answer en what color is the {kind}?")[-2:] == [name, "?"]
        assert tokenizer.tokenize(f"a red {kind}.")[-2:] == [name, "."]
        assert tokenizer.tokenize(f"detect {kind} ; square")[1] == name
