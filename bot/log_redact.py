"""Keep interaction tokens out of logs.

discord.py logs every REST URL at DEBUG, and interaction follow-ups travel in the URL
(`/webhooks/{app}/{token}`, `/interactions/{id}/{token}/callback`). An interaction token
lets anyone answer as the bot for 15 minutes, so it is a secret like the bot token.
"""

from __future__ import annotations

import logging
import re

_TOKEN_IN_PATH = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Replace interaction/webhook tokens in URL paths."""
    return _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts tokens from the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(logger_names: tuple[str, ...] = ("discord.http", "discord.webhook")) -> None:
    """Attach the filter to the loggers that print REST URLs."""
    for name in logger_names:
        logging.getLogger(name).addFilter(RedactTokens())
