from __future__ import annotations

import logging

import pytest

from bot.__main__ import REDACTED, install_redaction, redact

TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5OnNlY3JldHRva2VuX2Zvcl90ZXN0cw"


def test_tokens_in_interaction_and_webhook_urls_are_redacted() -> None:
    url = f"https://discord.com/api/v10/webhooks/111/{TOKEN}/messages/@original"
    assert redact(url) == f"https://discord.com/api/v10/webhooks/111/{REDACTED}/messages/@original"
    callback = f"POST /api/v10/interactions/222/{TOKEN}/callback"
    assert TOKEN not in redact(callback)
    assert redact("GET /api/v10/channels/333/messages") == "GET /api/v10/channels/333/messages"


def test_discord_http_debug_lines_never_carry_the_token(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    with caplog.at_level(logging.DEBUG, logger="discord.http"):
        logging.getLogger("discord.http").debug(
            "%s %s has received %s", "PATCH", f"https://x/api/v10/webhooks/1/{TOKEN}", {}
        )
    assert caplog.records
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert REDACTED in caplog.records[0].getMessage()
