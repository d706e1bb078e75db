"""What a mention asks for: the text around the bot's mention, read as a task."""

from __future__ import annotations

from bot.cogs.mentions import parse_mention
from inference.tasks import Task


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
