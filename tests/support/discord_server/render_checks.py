"""Assertions that a message the bot sent cannot ping anyone or break its formatting."""

from __future__ import annotations

import re

from sandbox.discord.recorder import Recorded

LIVE_MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")


def assert_safe(rec: Recorded) -> None:
    """No live mention in any text, mentions disabled, code fences balanced."""
    text = rec.text
    assert not LIVE_MENTION.search(text), f"live mention in {text!r}"
    allowed = (rec.json or {}).get("allowed_mentions") or {}
    assert allowed.get("parse") == [], allowed
    for embed in rec.payload.get("embeds") or []:
        description = embed.get("description") or ""
        assert description.count("```") % 2 == 0, f"unbalanced code fence in {description!r}"
        assert len(description) <= 4096
    assert len(rec.content) <= 2000
