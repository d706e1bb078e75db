"""Composing the one final message: upload limits, JPEG fallback, safe error text; output
safety: model text can neither ping nor break formatting, and always fits."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from bot import answer
from bot.answer import ItemAnswer, compose
from bot.replies import ReplyAddress
from inference.annotate import DISCORD_UPLOAD_LIMIT_BYTES, label_color
from inference.detection import Detection
from inference.display import DISPLAY_MAX_BYTES, DISPLAY_MAX_SIDE_PX
from inference.queue.messages import JobResult
from inference.tasks import Task
from tests.support.bot_memory import big_upload, detect_result, measure
from tests.support.discord_server.harness import noisy_png
from tests.support.discord_server.render_checks import LIVE_MENTION

KiB = 1024


def detect_item(image: bytes | None) -> ItemAnswer:
    result = JobResult(
        job_id="j",
        context={},
        task=Task.DETECT,
        detections=(Detection("cat", (10, 10, 120, 120)),),
    )
    return ItemAnswer(label="a.png", result=result, image=image)


def test_small_upload_limit_falls_back_to_a_jpeg_named_jpg() -> None:
    limit = 200 * KiB
    answer = compose([detect_item(noisy_png())], max_file_bytes=limit)
    picture, boxes = answer.files
    assert picture.filename == "detections-1.jpg"
    assert picture.data.startswith(b"\xff\xd8\xff"), "JPEG data"
    assert len(picture.data) + len(boxes.data) <= limit
    assert answer.embeds[0].image.url == "attachment://detections-1.jpg"


def test_roomy_upload_limit_keeps_the_png() -> None:
    answer = compose([detect_item(noisy_png())], max_file_bytes=DISCORD_UPLOAD_LIMIT_BYTES)
    assert answer.files[0].filename == "detections-1.png"


def test_picture_that_cannot_fit_is_explained_and_boxes_still_sent() -> None:
    answer = compose([detect_item(noisy_png())], max_file_bytes=KiB)
    [boxes] = answer.files
    assert boxes.filename == "boxes-1.json"
    description = answer.embeds[0].description or ""
    assert "would not fit" in description and "boxes-1.json" in description
    assert answer.embeds[0].image.url is None


def test_pictures_of_one_message_share_the_limit() -> None:
    limit = 400 * KiB
    items = [detect_item(noisy_png(seed=s)) for s in (1, 2, 3)]
    answer = compose(items, max_file_bytes=limit)
    assert sum(len(f.data) for f in answer.files) <= limit
    assert [f.filename for f in answer.files if not f.filename.endswith(".json")] == [
        "detections-1.jpg",
        "detections-2.jpg",
        "detections-3.jpg",
    ]


def test_worker_error_text_cannot_ping() -> None:
    failed = JobResult(job_id="j", context={}, error="invalid_parameter", message="@everyone <@1>")
    answer = compose([ItemAnswer(label="x", result=failed)], max_file_bytes=KiB)
    assert not LIVE_MENTION.search(answer.embeds[0].description or "")


def test_upload_limit_travels_in_the_request_record() -> None:
    boosted = ReplyAddress(
        channel_id=1, user_id=2, guild_id=3, message_id=4, upload_limit_bytes=100 * 1024 * KiB
    )
    assert ReplyAddress.from_fields(boosted.to_fields()) == boosted
    # An address written before the limit was carried means the default.
    old = {k: v for k, v in boosted.to_fields().items() if k != "ul"}
    assert ReplyAddress.from_fields(old).upload_limit_bytes == DISCORD_UPLOAD_LIMIT_BYTES


def test_mentions_are_neutralised() -> None:
    text = "hi @everyone and @here, <@123>, <@!456>, <@&789> in <#42>"
    out = answer.safe_text(text)
    assert not LIVE_MENTION.search(out)
    assert out.replace(answer.ZWSP, "").replace("\\", "") == text


def test_markdown_and_links_are_escaped() -> None:
    out = answer.safe_text("**bold** _it_ `code` [click](https://evil.example) # head\n> quote")
    assert "\\*\\*bold\\*\\*" in out and "\\[click]" in out and "\\`code\\`" in out
    assert out.splitlines()[1].startswith("\\>")


def test_code_block_cannot_be_broken_out_of() -> None:
    block = answer.safe_code_block("before ``` after ````` @everyone")
    assert block.startswith("```\n") and block.endswith("\n```")
    assert block.count("```") == 2
    assert not LIVE_MENTION.search(block)


@given(st.text(max_size=9000), st.integers(min_value=2, max_value=4096))
def test_truncate_respects_limits(text: str, limit: int) -> None:
    cut = answer.truncate(text, limit)
    assert len(cut) <= limit
    assert cut == text or cut.endswith(answer.ELLIPSIS)


@given(st.text(max_size=3000))
def test_safe_text_never_has_live_mentions(text: str) -> None:
    assert not LIVE_MENTION.search(answer.safe_text(text))
    assert not LIVE_MENTION.search(answer.safe_code_block(text))
    assert answer.safe_code_block(text).count("```") == 2


def test_legend_counts_labels() -> None:
    dets = [Detection("cat", (0, 0, 1, 1))] * 2 + [Detection("@everyone", (0, 0, 1, 1))]
    legend = answer.legend(dets)
    assert legend.startswith("cat × 2, ")
    assert not LIVE_MENTION.search(legend)
    assert answer.legend([]) == "Nothing found."


@pytest.mark.slow
def test_a_40_megapixel_detect_raises_the_bots_peak_memory_by_at_most_150_mb() -> None:
    # Measured in a fresh process (tests/support/bot_memory.py). Before issue 19 the bot decoded
    # the upload in full to draw on it: +500 MB for this 7,900 x 5,000 RGBA PNG here
    # (`how="full"`), against ~15 MB drawing on the worker's display copy.
    upload, detection = big_upload(7900, 5000)
    result = detect_result(upload, detection, with_display=True)
    measured = measure(upload, result, "display")
    assert measured.increase_mb <= 150
    [size] = measured.pictures
    assert 0 < size <= DISPLAY_MAX_BYTES * 4  # the drawn copy, not a full-size picture


@pytest.mark.slow
def test_a_result_from_an_older_worker_costs_bounded_memory_too() -> None:
    # No display copy: a 40-megapixel PNG cannot be decoded small, so the answer is the
    # legend and the boxes without a picture; a 5-megapixel one is drawn within bounds.
    # (Passes before issue 19 only in the sense that nothing there was bounded.)
    upload, detection = big_upload(7900, 5000)
    measured = measure(upload, detect_result(upload, detection, with_display=False), "fallback")
    assert measured.pictures == []
    assert "too large to draw on here" in measured.note
    assert measured.increase_mb <= 20
    upload, detection = big_upload(2500, 2000)
    measured = measure(upload, detect_result(upload, detection, with_display=False), "fallback")
    assert len(measured.pictures) == 1
    assert measured.increase_mb <= 100


def test_boxes_are_drawn_on_the_display_copy_where_the_upload_had_them() -> None:
    upload, detection = big_upload(4000, 2000)
    item = ItemAnswer("big.png", detect_result(upload, detection, with_display=True))
    answer = compose([item], max_file_bytes=DISCORD_UPLOAD_LIMIT_BYTES)
    drawn = Image.open(io.BytesIO(answer.files[0].data))
    assert drawn.size == (DISPLAY_MAX_SIDE_PX, 800)
    # The square is at (1000, 500)-(2000, 1000) in the upload: (400, 200)-(800, 400) here,
    # its outline drawn just inside that box in the label's colour.
    colour = label_color("square")
    edge = drawn.convert("RGB").getpixel((600, 203))
    assert isinstance(edge, tuple)
    assert sum(abs(a - b) for a, b in zip(edge, colour, strict=True)) < 60
