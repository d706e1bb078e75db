"""Checked decoding of everything that crosses Redis: job messages, results, worker
records, request records (`inference.queue.messages`, `inference.queue.records`).

Redis is a trust boundary between separately deployed programs, so a decoder never uses
pickle, checks every field's type, and turns any problem into `MalformedMessage` (one
dropped or dead-lettered message) instead of a KeyError deep inside a worker or the bot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from inference.errors import MalformedMessage
from inference.queue.keys import check_part

MAX_CONTEXT_ITEMS = 16
MAX_CONTEXT_CHARS = 512


def load_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: deeply nested arrays (`[[[[...`) exhaust the decoder's stack.
        raise MalformedMessage(f"The {what} is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise MalformedMessage(f"The {what} is not a JSON object.")
    return data


def get(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    # bool is an int subclass; a boolean where a number belongs is a bug upstream.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedMessage(f"Field {name!r} is missing or has the wrong type.")
    return value


def get_opt(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return None if data.get(name) is None else get(data, name, kind)


def get_float(data: Mapping[str, Any], name: str) -> float:
    try:
        return float(get(data, name, (int, float)))
    except OverflowError as exc:  # a JSON integer too large for a float: 1 followed by 400 zeros
        raise MalformedMessage(f"Field {name!r} is out of range.") from exc


def opt_float(data: Mapping[str, Any], name: str) -> float | None:
    return None if data.get(name) is None else get_float(data, name)


def check_context(
    context: Mapping[str, Any], what: str = "job context", max_items: int = MAX_CONTEXT_ITEMS
) -> dict[str, str]:
    if not isinstance(context, Mapping) or len(context) > max_items:
        raise MalformedMessage(f"The {what} is not a small map.")
    out: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise MalformedMessage(f"The {what} must map strings to strings.")
        if len(key) + len(value) > MAX_CONTEXT_CHARS:
            raise MalformedMessage(f"An item of the {what} is too long.")
        out[key] = value
    return out


def check_version(data: Mapping[str, Any], expected: int | tuple[int, ...], what: str) -> None:
    version = data.get("v")
    if version not in (expected if isinstance(expected, tuple) else (expected,)):
        raise MalformedMessage(f"Unsupported {what} schema version {version!r}.")


def key_part(value: str, name: str) -> str:
    try:
        return check_part(value)
    except ValueError as exc:
        raise MalformedMessage(f"Field {name!r} is not a valid id.") from exc
