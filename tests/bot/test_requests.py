"""Reading a request: which language answers it."""

from __future__ import annotations

import pytest

from bot.requests import choose_language
from inference.errors import UnsupportedLanguage


def test_language_explicit_wins_then_the_first_supported_candidate() -> None:
    assert choose_language("fr", "de") == "fr"
    assert choose_language(None, "xx-YY", "pt-BR", "de") == "pt"
    assert choose_language(None, None, "") == "en"
    with pytest.raises(UnsupportedLanguage):
        choose_language("klingon", "de")
