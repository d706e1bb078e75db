"""Model inputs made ahead of the device, joined per chunk, and stopped per row."""

from __future__ import annotations

import copy
import dataclasses
import random
import threading
from typing import cast

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, models, processors

from inference.demo import shapes
from inference.demo.shapes import encode_png
from inference.engine.encoding import Encoding
from inference.engine.inputs import (
    ModelInput,
    Normaliser,
    RowBudgets,
    check_against_processor,
    collate,
    spec_from_processor,
    stack_pixels,
)
from inference.errors import ModelLoadError
from inference.intake import load_image
from inference.queue.memory import picture_digest
from inference.tasks import InferenceRequest, TaskSpec
from tests.support.demo import demo_engine

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

CPU = torch.device("cpu")


def _picture(seed: int) -> bytes:
    return encode_png(shapes.make_scene(random.Random(seed), size=(200, 160)).image)


def test_collated_chunk_equals_the_processors_own_batch() -> None:
    engine = demo_engine()
    specs = [
        TaskSpec.build("ocr"),
        TaskSpec.build("answer", question="what color is the circle on the left?"),
        TaskSpec.build("detect", objects="circle ; square"),
    ]
    pictures = [_picture(n) for n in range(3)]
    prepared = engine.prepare(
        [InferenceRequest(s, p) for s, p in zip(specs, pictures, strict=True)]
    )
    assert all(isinstance(r.prepared, ModelInput) for r in prepared)
    assert [r.digest for r in prepared] == [picture_digest(p) for p in pictures]  # hashed once
    inputs = cast(list[ModelInput], [r.prepared for r in prepared])
    joined = collate(inputs, pad_token_id=engine._pad_token_id, device=CPU)
    processor = engine._loaded.processor
    reference = processor(
        images=[load_image(p, target_size=engine.image_size).image for p in pictures],
        text=["<image>" + s.prompt() for s in specs],
        return_tensors="pt",
        padding="longest",
    )
    assert len({len(i.input_ids) for i in inputs}) == 3  # really padded, to three lengths
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(joined[name], reference[name]), name
    pixels = engine._normalise(stack_pixels([i.pixels for i in inputs], CPU), torch.float32)
    assert torch.equal(pixels, reference["pixel_values"])


def test_row_budgets_mark_each_row_done_at_its_own_length() -> None:
    stop = RowBudgets(prompt_len=5, budgets=[1, 3, 2], device=CPU)
    assert stop(torch.zeros((3, 6), dtype=torch.long), None).tolist() == [True, False, False]
    assert stop(torch.zeros((3, 7), dtype=torch.long), None).tolist() == [True, False, True]
    assert stop(torch.zeros((3, 8), dtype=torch.long), None).tolist() == [True, True, True]


def test_a_chunk_ends_when_every_row_reached_its_own_budget_or_its_end() -> None:
    """A 3-token description batched with a one-word answer: the call takes 3 steps,
    not the answer's 48-token budget nor the description's natural ~38 tokens."""
    engine = demo_engine()
    language_model = engine._loaded.model.model.language_model
    steps: list[int] = []
    hook = language_model.register_forward_hook(lambda *_: steps.append(1))
    try:
        picture = _picture(5)
        short = InferenceRequest(TaskSpec.build("describe", max_new_tokens=3), picture)
        answer = InferenceRequest(
            TaskSpec.build("answer", question="what color is the circle?"), picture
        )
        full = InferenceRequest(TaskSpec.build("describe"), picture)
        alone = [engine.generate([r])[0] for r in (short, answer, full)]
        steps.clear()
        both = engine.generate([short, answer])
    finally:
        hook.remove()
    assert both == alone[:2]
    assert len(alone[2].text.split()) > 10  # unbounded, the description runs on
    assert len(both[1].text.split()) <= 2
    assert len(steps) == 3


def test_preparing_while_generating_gives_the_same_answers() -> None:
    """The worker prepares the next batch (here in a thread: PREPARE_PROCESSES=0) while
    the engine thread generates and decodes."""
    engine = demo_engine()
    requests = [InferenceRequest(TaskSpec.build("caption"), _picture(n)) for n in range(8)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def prepare_again() -> None:
        try:
            while not stop.is_set():
                engine.prepare(requests)
        except BaseException as exc:
            errors.append(exc)

    preparer = threading.Thread(target=prepare_again)
    preparer.start()
    try:
        results = [engine.generate(requests) for _ in range(3)]
    finally:
        stop.set()
        preparer.join()
    assert not errors
    assert results[0] == results[1] == results[2] and all(r.ok for r in results[0])


def test_a_processor_this_path_does_not_reproduce_is_refused() -> None:
    processor = demo_engine()._loaded.processor
    encoding = demo_engine()._pool.local
    check_against_processor(encoding, Normaliser(processor), processor)  # the demo's: fine
    off = Normaliser(processor)
    off._scale = 1 / 256  # one grey level in 256 off: every answer would quietly drift
    with pytest.raises(ModelLoadError, match="image preprocessing"):
        check_against_processor(encoding, off, processor)


def test_a_tokenizer_that_adds_its_own_bos_is_followed_as_the_processor_does() -> None:
    """A Gemma tokenizer's template adds <bos>; the encoding must add what the processor adds."""
    processor = copy.deepcopy(demo_engine()._loaded.processor)
    bos = processor.tokenizer.bos_token_id
    template = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    processor.tokenizer.backend_tokenizer.post_processor = template
    spec = spec_from_processor(
        processor, target_size=112, max_image_bytes=10**6, max_image_pixels=10**7
    )
    prompt = TaskSpec.build("caption").prompt()
    reference = processor(images=[Image.new("RGB", (50, 40))], text=["<image>" + prompt])
    assert reference["input_ids"][0][0] == bos  # the template took effect
    assert spec.add_special_tokens
    assert Encoding(spec).token_ids(prompt).tolist() == list(reference["input_ids"][0])
    assert not spec_from_processor(
        demo_engine()._loaded.processor,
        target_size=112,
        max_image_bytes=10**6,
        max_image_pixels=10**7,
    ).add_special_tokens


def _hostile_specs(content: str) -> list[TaskSpec]:
    return [
        TaskSpec.build("answer", question=f"what is {content} here?"),
        TaskSpec.build("detect", objects=f"cat ; {content} ; dog{content}"),
    ]


def test_every_added_token_typed_by_a_user_reaches_the_model_as_text() -> None:
    """Fails on the old encoding: `<image>`, `<bos>`, `<eos>`, `<pad>`, every `<locNNNN>` and
    `<segNNN>` in a question or an object list became the model's own tokens."""
    processor = demo_engine()._loaded.processor
    encoding = demo_engine()._pool.local
    tokenizer = processor.tokenizer
    added = {int(i): t.content for i, t in tokenizer.added_tokens_decoder.items()}
    assert {"<image>", "<bos>", "<eos>", "<pad>", "<loc0001>", "<seg127>"} <= set(added.values())
    seq_len = int(processor.image_seq_length)
    fixed = [processor.image_token_id] * seq_len + [tokenizer.bos_token_id]
    newline = tokenizer.convert_tokens_to_ids("\n")
    for content in added.values():
        for spec in _hostile_specs(content):
            ids = encoding.token_ids(spec.prompt()).tolist()
            assert ids[: len(fixed)] == fixed, content  # the real placeholders and <bos>
            assert ids[-1] == newline  # the processor's closing "\n", still its token
            text = ids[len(fixed) : -1]
            assert not set(text) & set(added), (content, spec.prompt())
            # Plain text: it decodes back to exactly what the user typed.
            assert tokenizer.decode(text) == spec.prompt(), content


def test_a_tokenizer_whose_merges_rebuild_a_control_token_still_reads_it_as_text() -> None:
    """A BPE model can have merges that lead back to `<image>` from its characters; the
    characters are then tokenised one by one. Fails on the old encoding (no text view)."""
    letters = ["<", "i", "m", "a", "g", "e", ">", "x", "\n"]
    steps = ["<i", "<im", "<ima", "<imag", "<image", "<image>"]
    vocab = {t: n for n, t in enumerate(["<pad>", "<bos>", *letters, *steps])}
    merges = list(zip(["<", *steps[:-1]], ["i", "m", "a", "g", "e", ">"], strict=True))
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    tokenizer.add_special_tokens(["<pad>", "<bos>", "<image>"])
    image, bos = vocab["<image>"], vocab["<bos>"]
    assert tokenizer.encode("<image>", add_special_tokens=False).ids == [image]
    spec = spec_from_processor(
        demo_engine()._loaded.processor, target_size=112, max_image_bytes=1, max_image_pixels=1
    )
    own = dataclasses.replace(spec, tokenizer_json=tokenizer.to_str(), prefix="<image><bos>")
    ids = Encoding(own).token_ids("x<image>").tolist()
    assert ids[:2] == [image, bos]
    assert ids[2:] == [vocab[c] for c in "x<image>\n"]
