"""Output safety: model text can neither ping nor break formatting, and always fits."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bot import render
from bot.mention_text import parse_mention
from inference.detection import Detection
from inference.tasks import Task

LIVE = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")


def test_mentions_are_neutralised() -> None:
    text = "hi @everyone and @here, <@123>, <@!456>, <@&789> in <#42>"
    out = render.safe_text(text)
    assert not LIVE.search(out)
    assert out.replace(render.ZWSP, "").replace("\\", "") == text


def test_markdown_and_links_are_escaped() -> None:
    out = render.safe_text("**bold** _it_ `code` [click](https://evil.example) # head\n> quote")
    assert "\\*\\*bold\\*\\*" in out and "\\[click]" in out and "\\`code\\`" in out
    assert out.splitlines()[1].startswith("\\>")


def test_code_block_cannot_be_broken_out_of() -> None:
    block = render.safe_code_block("before ``` after ````` @everyone")
    assert block.startswith("```\n") and block.endswith("\n```")
    assert block.count("```") == 2
    assert not LIVE.search(block)


@given(st.text(max_size=9000), st.integers(min_value=2, max_value=4096))
def test_truncate_and_split_respect_limits(text: str, limit: int) -> None:
    cut = render.truncate(text, limit)
    assert len(cut) <= limit
    assert cut == text or cut.endswith(render.ELLIPSIS)
    chunks = render.split_text(text, limit)
    assert all(len(c) <= limit for c in chunks)


@given(st.text(max_size=3000))
def test_safe_text_never_has_live_mentions(text: str) -> None:
    assert not LIVE.search(render.safe_text(text))
    assert not LIVE.search(render.safe_code_block(text))
    assert render.safe_code_block(text).count("```") == 2


def test_split_prefers_line_breaks() -> None:
    text = "\n".join(f"line {i:04d}" for i in range(600))
    chunks = render.split_text(text, 2000)
    assert all(c.startswith("line ") and c.endswith(tuple("0123456789")) for c in chunks)
    assert "\n".join(chunks) == text


def test_legend_counts_labels() -> None:
    dets = [Detection("cat", (0, 0, 1, 1))] * 2 + [Detection("@everyone", (0, 0, 1, 1))]
    legend = render.legend(dets)
    assert legend.startswith("cat × 2, ")
    assert not LIVE.search(legend)
    assert render.legend([]) == "Nothing found."


def test_parse_mention() -> None:
    bot_id = 99
    assert parse_mention("<@99>", bot_id).task is Task.CAPTION
    assert parse_mention("<@!99> describe", bot_id).task is Task.DESCRIBE
    assert parse_mention("<@99> OCR", bot_id).task is Task.OCR
    assert parse_mention("read this <@99>", bot_id).task is Task.OCR
    detect = parse_mention("<@99> detect cat ; dog", bot_id)
    assert detect.task is Task.DETECT and detect.objects == "cat ; dog"
    ask = parse_mention("<@99> what colour is <@5>'s car?", bot_id)
    assert ask.task is Task.ANSWER and ask.question == "what colour is <@5>'s car?"
