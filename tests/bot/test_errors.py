"""One error path through the real bot and the local Discord-compatible server: a bug in a
slash command, a follow-up button, a modal or a mention reaches the user as the same short
private line, and is logged once as a bug, from `report_error`."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from bot.client import PalicordBot
from bot.download import ImageRef
from bot.guild_config import GuildConfig
from bot.replies import ReplyAddress
from inference.errors import PalicordError
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, error_for
from tests.support.discord_server.harness import one_shape_scene, png_bytes

GENERIC = PalicordError.default_message


async def test_a_bug_anywhere_reaches_the_user_privately_and_is_logged_once(
    server: DiscordServer, bot: PalicordBot, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    user = server.user("uma")
    image = server.attachment(png_bytes(one_shape_scene(seed=71).image), "e.png")
    first = await server.slash("describe", user=user, attachments={"image": image})
    await answer_for(server, first)
    assert first.original is not None
    answer = server.messages[int(first.original["id"])]

    async def broken(
        asked: ReplyAddress, refs: Sequence[ImageRef]
    ) -> tuple[GuildConfig, list[ImageRef]]:
        raise RuntimeError("a bug")

    bot.requests.admit = broken  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="bot.errors")

    slash = await server.slash("describe", user=user, attachments={"image": image})
    pressed = await server.press(answer, "Describe in detail", user=user)
    opened = await server.press(answer, "Ask about this image", user=user)
    await server.wait_for_callback(opened)
    submitted = await server.submit_modal(opened, {"Your question": "what is it?"})
    for state in (slash, pressed, submitted):
        error = await error_for(server, state)
        assert error.ephemeral and error.content == "⚠️ " + GENERIC

    since = server.recorder.next_seq()
    mention = await server.post_message(user, "what is it?", attachments=[image], mention_bot=True)
    [reply] = await server.recorder.wait_for(
        lambda r: (
            r.key == "POST /channels/{channel_id}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == mention["id"]
        ),
        since=since,
    )
    assert reply.content == "⚠️ " + GENERIC

    bugs = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert sorted(r.getMessage() for r in bugs) == [
        "button describe failed",
        "command describe failed",
        "mention failed",
        "modal Ask about this image failed",
    ]
