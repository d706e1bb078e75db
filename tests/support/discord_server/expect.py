"""Waiting for, and picking out, what the bot sent for one interaction or message."""

from __future__ import annotations

import json

from sandbox.discord.actions import DiscordServer
from sandbox.discord.interactions import InteractionState
from sandbox.discord.payloads import Json
from sandbox.discord.recorder import Recorded, SentFile

DEFERRED_CHANNEL_MESSAGE = 5


def _for_token(state: InteractionState, r: Recorded) -> bool:
    return r.params.get("token") == state.token


def is_answer(r: Recorded) -> bool:
    """The final answer carries embeds; progress edits carry only text."""
    return bool(r.payload.get("embeds"))


async def answer_for(
    server: DiscordServer, state: InteractionState, *, timeout_s: float = 10.0
) -> Recorded:
    """The one webhook edit that holds the interaction's answer."""
    [rec] = await server.recorder.wait_for(
        lambda r: _for_token(state, r) and r.method == "PATCH" and is_answer(r),
        timeout_s=timeout_s,
    )
    return rec


async def error_for(
    server: DiscordServer, state: InteractionState, *, timeout_s: float = 10.0
) -> Recorded:
    """The ephemeral error reply (a callback message or a follow-up)."""
    [rec] = await server.recorder.wait_for(
        lambda r: _for_token(state, r) and r.method == "POST" and r.ephemeral,
        timeout_s=timeout_s,
    )
    return rec


async def reply_answer(
    server: DiscordServer, reply_to: Json, *, since: int = 0, timeout_s: float = 10.0
) -> Recorded:
    """The edit of the bot's reply to message `reply_to` that holds the answer."""
    [progress] = await server.recorder.wait_for(
        lambda r: (
            r.key == "POST /channels/{channel_id}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == reply_to["id"]
        ),
        since=since,
        timeout_s=timeout_s,
    )
    reply_id = progress.response["id"]
    [rec] = await server.recorder.wait_for(
        lambda r: (
            r.key == "PATCH /channels/{channel_id}/messages/{message_id}"
            and r.params["message_id"] == reply_id
            and (is_answer(r) or r.content.startswith("⚠️"))
        ),
        since=since,
        timeout_s=timeout_s,
    )
    return rec


def sent_file(rec: Recorded, suffix: str) -> SentFile:
    matches = [f for f in rec.files if f.filename.endswith(suffix)]
    assert matches, f"no *{suffix} file in {[f.filename for f in rec.files]}"
    return matches[0]


def boxes(rec: Recorded) -> list[Json]:
    data = json.loads(sent_file(rec, ".json").data)
    assert isinstance(data, list)
    return data
