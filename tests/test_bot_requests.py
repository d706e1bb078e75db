"""Reading a request: what a mention asks for, and which language answers it."""

from __future__ import annotations

import pytest

from bot.requests import choose_language, parse_mention
from inference.errors import UnsupportedLanguage
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


def test_language_explicit_wins_then_the_first_supported_candidate() -> None:
    assert choose_language("fr", "de") == "fr"
    assert choose_language(None, "xx-YY", "pt-BR", "de") == "pt"
    assert choose_language(None, None, "") == "en"
    with pytest.raises(UnsupportedLanguage):
        choose_language("klingon", "de")
