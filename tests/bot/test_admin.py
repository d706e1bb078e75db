"""/settings and /queue through the real bot, and the limits they control."""

from __future__ import annotations

from bot.client import PalicordBot
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, error_for
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
)


async def test_settings_needs_manage_server(server: DiscordServer, bot: PalicordBot) -> None:
    state = await server.slash("settings", user=server.user("nobody"), daily_quota=5)
    callback = await server.wait_for_callback(state)
    assert callback.ephemeral and "Manage Server" in callback.content


async def test_settings_channels_and_quota(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    admin = server.user("boss", admin=True)
    elsewhere = server.guilds[1].channel.id
    state = await server.slash("settings", user=admin, channels=f"<#{server.guild.channel.id}>")
    shown = await server.wait_for_callback(state)
    assert shown.ephemeral and f"<#{server.guild.channel.id}>" in shown.text

    state = await server.slash("settings", user=admin, channels=f"<#{elsewhere}>")
    refused = await server.wait_for_callback(state)
    assert "not in this server" in refused.content

    state = await server.slash("settings", user=admin, daily_quota=1, language="de")
    shown = await server.wait_for_callback(state)
    assert "1 images" in shown.text and "de" in shown.text

    image = server.attachment(png_bytes(one_shape_scene(seed=41).image), "s.png")
    user = server.user("pat", locale="ja")
    first = await server.slash("describe", user=user, attachments={"image": image})
    assert "(ja)" in (await answer_for(server, first)).text  # user locale beats the default
    second = await server.slash("describe", user=user, attachments={"image": image})
    assert "quota" in (await error_for(server, second)).content

    # The other guild is unaffected by this guild's settings and quota.
    other = await server.slash(
        "describe", user=user, guild=server.guilds[1], attachments={"image": image}
    )
    await answer_for(server, other)


async def test_mention_replies_can_be_turned_off(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    admin = server.user("boss", admin=True)
    state = await server.slash("settings", user=admin, mention_replies=False)
    await server.wait_for_callback(state)
    image = server.attachment(png_bytes(one_shape_scene(seed=42).image), "m.png")
    since = server.recorder.next_seq()
    await server.post_message(server.user("quinn"), attachments=[image], mention_bot=True)
    # Prove the bot handled the message (and stayed quiet) by seeing it answer the next one.
    probe = await server.slash("queue", user=server.user("quinn"))
    await server.wait_for_callback(probe)
    assert not server.channel_posts(since=since)


async def test_cooldown(server: DiscordServer, prefix: str, worker: Worker) -> None:
    async with running_bot(bot_settings(server, prefix, user_cooldown_s=30)):
        image = server.attachment(png_bytes(one_shape_scene(seed=43).image), "c.png")
        user = server.user("rita")
        first = await server.slash("describe", user=user, attachments={"image": image})
        await answer_for(server, first)
        second = await server.slash("describe", user=user, attachments={"image": image})
        callback = await server.wait_for_callback(second)
        assert callback.ephemeral and "Please wait" in callback.content


async def test_queue_shows_workers_and_your_jobs(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    state = await server.slash("queue", user=server.user("sam"))
    shown = await server.wait_for_callback(state)
    assert shown.ephemeral
    assert "You have nothing waiting." in shown.text
    fields = {f["name"]: f["value"] for f in shown.payload["embeds"][0]["fields"]}
    assert fields["Workers online"] == "1"
