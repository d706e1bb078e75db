"""Make untrusted text (model output, file names, user input) safe to post on Discord.

Safe means: it cannot ping anyone even if `allowed_mentions` were misconfigured, it
cannot change the formatting around it (no bold/links/headings/code-block breakouts),
and it fits Discord's length limits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import discord

from inference.detection import Detection

MESSAGE_LIMIT = 2_000
EMBED_DESCRIPTION_LIMIT = 4_096
EMBED_TITLE_LIMIT = 256
EMBED_TOTAL_LIMIT = 6_000  # across all embeds of one message
MAX_EMBEDS = 10
MAX_FILES = 10

ZWSP = "\u200b"
ELLIPSIS = "…"

# Control characters other than newline and tab can hide text or confuse clients.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
# Mass mentions and <@id>, <@!id>, <@&id>, <#id>: a zero-width space after the sigil keeps
# the text readable while Discord no longer parses it as a mention.
_MENTION_RE = re.compile(r"@(?=everyone|here)|<(?=[@#])")


def _strip_controls(text: str) -> str:
    return _CONTROL_RE.sub("", text)


def neutralize_mentions(text: str) -> str:
    """Break every mention form (`@everyone`, `@here`, `<@id>`, `<@&id>`, `<#id>`)."""
    return _MENTION_RE.sub(lambda m: m.group(0) + ZWSP, text)


def safe_text(text: str) -> str:
    """Markdown-escaped, mention-free text for a message body or embed description."""
    escaped = discord.utils.escape_markdown(_strip_controls(text), ignore_links=False)
    return neutralize_mentions(escaped)


def safe_inline(text: str, limit: int = EMBED_TITLE_LIMIT) -> str:
    """`safe_text` on one line (file names, labels, titles), truncated to `limit`."""
    return truncate(safe_text(" ".join(text.split())), limit)


def safe_code_block(text: str, limit: int = EMBED_DESCRIPTION_LIMIT) -> str:
    """Text inside a code block that no backtick run in `text` can close early."""
    body = _strip_controls(text).replace("`", "`" + ZWSP)
    body = neutralize_mentions(body).strip("\n") or " "
    fence_len = len("```\n\n```")
    return "```\n" + truncate(body, limit - fence_len) + "\n```"


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    if limit < 1:
        return ""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    # A cut right after an escaping backslash would escape the ellipsis instead.
    if cut.endswith("\\") and not cut.endswith("\\\\"):
        cut = cut[:-1]
    return cut.rstrip() + ELLIPSIS


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split into chunks of at most `limit` characters, at line breaks or spaces when
    possible, never between a backslash and the character it escapes."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        at = window.rfind("\n")
        if at < limit // 2:
            at = window.rfind(" ")
        if at < limit // 2:
            at = limit
        if rest[at - 1] == "\\" and not rest[: at - 1].endswith("\\"):
            at -= 1
        chunks.append(rest[:at].rstrip())
        rest = rest[at:].lstrip("\n ")
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def legend(detections: Iterable[Detection]) -> str:
    """ "circle × 2, square × 1": most frequent first, then by label."""
    counts = Counter(d.label for d in detections)
    if not counts:
        return "Nothing found."
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{safe_inline(label, 60)} × {n}" for label, n in ordered)
