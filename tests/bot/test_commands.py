"""The real discord.py bot logs in to the fake Discord, connects and syncs its commands."""

from __future__ import annotations

import pytest

from sandbox.discord import DiscordServer
from tests.support.discord_server.harness import bot_settings, running_bot

STRING, INTEGER, BOOLEAN, ATTACHMENT = 3, 4, 5, 11
MANAGE_GUILD = 1 << 5


def options(cmd: dict[str, object]) -> list[tuple[str, int, bool]]:
    raw = cmd.get("options") or []
    assert isinstance(raw, list)
    return [(o["name"], o["type"], bool(o.get("required"))) for o in raw]


async def test_login_ready_and_global_sync(server: DiscordServer, prefix: str) -> None:
    async with running_bot(bot_settings(server, prefix)) as bot:
        assert bot.user is not None and bot.user.id == server.bot_user.id
        assert {g.id for g in bot.guilds} == {g.id for g in server.guilds}
        assert server.gateway.query["v"] == "10" and server.gateway.query["encoding"] == "json"
        identify = server.gateway.identify
        assert identify is not None
        intents = identify["intents"]
        assert not intents & (1 << 15), "message content is privileged and not needed"
        assert not intents & (1 << 1), "members is privileged and not needed"
        assert intents & (1 << 9), "guild messages, for mentions"

        synced = server.commands[None]
        slash = {c["name"]: c for c in synced if c.get("type", 1) == 1}
        menus = {c["name"] for c in synced if c.get("type") == 3}
        assert set(slash) == {
            "describe",
            "ask",
            "detect",
            "segment",
            "ocr",
            "queue",
            "settings",
            "alttext",
        }
        assert menus == {"Describe image", "Read text (OCR)", "Detect objects…", "Segment…"}

        assert options(slash["describe"]) == [
            ("image", ATTACHMENT, True),
            ("detail", STRING, False),
            ("language", STRING, False),
        ]
        detail = slash["describe"]["options"][1]
        assert [c["value"] for c in detail["choices"]] == ["short", "long"]
        assert slash["describe"]["options"][2]["autocomplete"] is True
        assert options(slash["ask"]) == [
            ("image", ATTACHMENT, True),
            ("question", STRING, True),
            ("language", STRING, False),
        ]
        assert options(slash["detect"]) == [("image", ATTACHMENT, True), ("objects", STRING, True)]
        assert options(slash["ocr"]) == [("image", ATTACHMENT, True)]
        assert options(slash["queue"]) == []
        assert [name for name, _, _ in options(slash["settings"])] == [
            "channels",
            "daily_quota",
            "language",
            "mention_replies",
            "alt_text_channels",
        ]
        assert options(slash["alttext"]) == [("mine", BOOLEAN, False)]
        assert int(slash["settings"]["default_member_permissions"]) == MANAGE_GUILD
        # Descriptions are the commands' docstrings, shown to users by Discord.
        assert slash["describe"]["description"].startswith("Describe an image")

    logged_in = server.recorder.matching(lambda r: r.key == "GET /users/@me")
    assert logged_in, "login goes through the configured API base"


async def test_dev_guild_sync_and_token_not_logged(
    server: DiscordServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    settings = bot_settings(server, prefix, dev_guild_id=server.guild.id)
    async with running_bot(settings):
        assert server.guild.id in server.commands
        assert None not in server.commands, "dev mode must not sync globally"
        names = {c["name"] for c in server.commands[server.guild.id]}
        assert "describe" in names and "Describe image" in names
    assert server.token not in caplog.text
    assert server.token not in repr(settings)
