"""What a mention asks for: the text around the bot's mention, read as a task."""

from __future__ import annotations

import re

from bot.service import Ask
from inference.tasks import Task

_MENTION_RE = re.compile(r"<@!?(\d+)>")
_KEYWORDS = {
    "detect": Task.DETECT,
    "describe": Task.DESCRIBE,
    "caption": Task.CAPTION,
    "ocr": Task.OCR,
    "read": Task.OCR,
}


def strip_mentions(text: str, bot_id: int) -> str:
    """The message without the bot's own mention(s), whitespace collapsed."""
    cleaned = _MENTION_RE.sub(lambda m: "" if int(m.group(1)) == bot_id else m.group(0), text)
    return " ".join(cleaned.split())


def parse_mention(text: str, bot_id: int) -> Ask:
    """No text: caption. `detect a ; b`: detection. `describe`: a long description.
    `ocr` / `read`: the text. `caption`: a caption. Anything else: a question."""
    rest = strip_mentions(text, bot_id)
    if not rest:
        return Ask(Task.CAPTION)
    word, _, tail = rest.partition(" ")
    task = _KEYWORDS.get(word.lower().rstrip(":,"))
    if task is Task.DETECT:
        return Ask(Task.DETECT, objects=tail)
    if task is not None:
        return Ask(task)
    return Ask(Task.ANSWER, question=rest)
