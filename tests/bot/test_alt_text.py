"""Automatic alt text through the real bot, a real worker and the local Discord-compatible
server: the reply and its AI label, who and what is left alone, the re-post through a
channel webhook, clean-up when the original goes, and the 4014 refusal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable

import pytest
from PIL import Image, ImageDraw, ImageFont
from redis.asyncio import Redis

from bot.alt_text import looks_like_text
from bot.client import PalicordBot
from bot.guild_config import GuildConfig, GuildConfigStore
from inference.queue import Keys
from inference.queue.keys import background_unit
from inference.worker.service import Worker
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer
from sandbox.discord.payloads import FakeUser, Json
from sandbox.discord.recorder import Recorded
from tests.support.discord_server.expect import answer_for
from tests.support.discord_server.harness import (
    REDIS_URL,
    ROOT,
    bot_env,
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)
from tests.support.queue import RecordingWorker, aw

REPLY = "POST /channels/{channel_id}/messages"


@pytest.fixture
async def server() -> AsyncIterator[DiscordServer]:
    srv = DiscordServer(extra_channels=("art",))
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def bot(server: DiscordServer, prefix: str) -> AsyncIterator[PalicordBot]:
    settings = bot_settings(
        server, prefix, message_content_intent=True, alt_text_per_channel_per_hour=5
    )
    async with running_bot(settings) as running:
        admin = server.user("boss", admin=True)
        art = server.guild.channel_named("art")
        state = await server.slash("settings", user=admin, alt_text_channels=f"<#{art.id}>")
        shown = await server.wait_for_callback(state)
        assert f"<#{art.id}>" in shown.text and "Not active" not in shown.text
        yield running


@pytest.fixture
async def worker(prefix: str) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(prefix), ShapesOracle()) as running:
        yield running


def picture(server: DiscordServer, seed: int, alt: str | None = None) -> Json:
    data = png_bytes(one_shape_scene(seed=seed).image)
    return server.attachment(data, f"shape-{seed}.png", description=alt)


def text_picture() -> bytes:
    image = Image.new("RGB", (480, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=18)
    for i in range(10):
        draw.text((12, 10 + 30 * i), f"Line {i}: the meeting moved to room 4B", "black", font)
    return png_bytes(image)


async def post_art(
    server: DiscordServer, user: FakeUser, attachments: list[Json], **kw: object
) -> Json:
    art = server.guild.channel_named("art")
    return await server.post_message(user, attachments=attachments, channel=art, **kw)  # type: ignore[arg-type]


def is_reply_to(message: Json) -> object:
    def match(r: Recorded) -> bool:
        ref = r.payload.get("message_reference") or {}
        return r.key == REPLY and str(ref.get("message_id")) == message["id"]

    return match


async def reply_to(server: DiscordServer, message: Json, timeout_s: float = 10.0) -> Recorded:
    [rec] = await server.recorder.wait_for(is_reply_to(message), timeout_s=timeout_s)  # type: ignore[arg-type]
    return rec


def alt_replies(server: DiscordServer, since: int = 0) -> list[Recorded]:
    return server.recorder.matching(
        lambda r: r.key == REPLY and "AI description" in r.content, since=since
    )


async def test_a_picture_without_alt_text_gets_one_reply_ai_label_first(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=3)
    poster = server.user("ada")
    first = await post_art(server, poster, [picture(server, 3)])
    rec = await reply_to(server, first)
    assert rec.content.startswith("**AI description:**")
    colour, shape = scene.shapes[0].color, scene.shapes[0].kind
    assert f"a picture of one {colour} {shape}" in rec.content
    assert "/alttext mine:False" in rec.content  # the server's first: how to opt out
    assert rec.payload["allowed_mentions"]["parse"] == []
    labels = [c["label"] for row in rec.payload["components"] for c in row["components"]]
    assert labels == ["Repost with alt text", "Remove"]
    second = await post_art(server, poster, [picture(server, 4), picture(server, 5)])
    rec = await reply_to(server, second)
    assert "/alttext" not in rec.content and "1. " in rec.content and "2. " in rec.content


async def test_mostly_text_pictures_are_read_verbatim_and_safely(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    assert looks_like_text(text_picture())
    assert not looks_like_text(png_bytes(one_shape_scene(seed=9).image))
    shot = server.attachment(text_picture(), "notes.png")
    rec = await reply_to(server, await post_art(server, server.user("bo"), [shot]))
    assert "Text:" in rec.content
    assert "@everyone" not in rec.content.replace("@\u200beveryone", "")  # hostile OCR


async def test_who_and_what_is_left_alone(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    since = server.recorder.next_seq()
    await post_art(server, server.user("cy"), [picture(server, 11, alt="a red square")])
    await server.post_message(server.user("di"), attachments=[picture(server, 12)])  # #general
    robot = FakeUser(server.user("x").id, "robot", bot=True)
    await post_art(server, robot, [picture(server, 13)])
    shy = server.user("eve")
    state = await server.slash("alttext", user=shy, mine=False)
    assert "do not describe" in (await server.wait_for_callback(state)).content
    shown = await server.slash("alttext", user=shy)
    assert "do not describe" in (await server.wait_for_callback(shown)).content
    await post_art(server, shy, [picture(server, 14)])
    # A mention in an alt-text channel is a request like anywhere else, not also described.
    await post_art(server, server.user("fay"), [picture(server, 15)], mention_bot=True)
    control = await post_art(server, server.user("gus"), [picture(server, 16)])
    await reply_to(server, control)
    await asyncio.sleep(0.5)
    assert len(alt_replies(server, since)) == 1


async def test_the_poster_reposts_with_alt_text_others_may_not(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    poster = server.user("hal")
    original = await post_art(server, poster, [picture(server, 21)], content="my drawing")
    reply = (await reply_to(server, original)).response
    other = await server.press(reply, "Repost with alt text", user=server.user("ivy"))
    refused = await server.wait_for_callback(other)
    assert refused.ephemeral and "Only the person who posted" in refused.content

    state = await server.press(reply, "Repost with alt text", user=poster)
    [executed] = await server.recorder.wait_for(
        lambda r: (
            r.key == "POST /webhooks/{app_id}/{token}" and server.webhooks.owns(r.params["app_id"])
        )
    )
    assert executed.payload["username"] == "hal" and executed.payload["avatar_url"]
    assert executed.content == "my drawing"
    [posted] = executed.response["attachments"]
    assert posted["description"].startswith("AI description: a picture of one")
    assert len(posted["description"]) <= 1024
    done = await server.recorder.wait_for(
        lambda r: r.params.get("token") == state.token and "Re-posted" in r.content
    )
    assert done
    assert int(original["id"]) not in server.messages  # the bot may manage messages
    assert int(reply["id"]) not in server.messages  # and the reply went


async def test_a_double_press_reposts_once(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    poster = server.user("jo")
    original = await post_art(server, poster, [picture(server, 22)], content="twice?")
    reply = (await reply_to(server, original)).response
    presses = await asyncio.gather(
        server.press(reply, "Repost with alt text", user=poster),
        server.press(reply, "Repost with alt text", user=poster),
    )

    def outcome_of(token: str) -> Callable[[Recorded], bool]:
        return lambda r: r.params.get("token") == token and "re-post" in r.content.lower()

    outcomes = [
        (await server.recorder.wait_for(outcome_of(state.token)))[-1].content for state in presses
    ]
    executed = server.recorder.matching(
        lambda r: (
            r.key == "POST /webhooks/{app_id}/{token}" and server.webhooks.owns(r.params["app_id"])
        )
    )
    assert len(executed) == 1  # one re-post, not two
    assert sum("Re-posted with alt text" in text for text in outcomes) == 1
    # The other press was told why nothing happened: the first was still re-posting, or
    # (if it came after) the description is gone with the reply.
    other = next(text for text in outcomes if "Re-posted with alt text" not in text)
    assert "being re-posted already" in other or "too old to re-post" in other


async def test_without_manage_webhooks_no_repost_is_offered(
    server: DiscordServer, prefix: str, worker: Worker
) -> None:
    server.guild.bot_permissions = 0
    async with running_bot(bot_settings(server, prefix, message_content_intent=True)):
        art = server.guild.channel_named("art")
        admin = server.user("boss", admin=True)
        await server.wait_for_callback(
            await server.slash("settings", user=admin, alt_text_channels=f"<#{art.id}>")
        )
        rec = await reply_to(
            server, await post_art(server, server.user("jo"), [picture(server, 2)])
        )
        labels = [c["label"] for row in rec.payload["components"] for c in row["components"]]
        assert labels == ["Remove"] and "Manage Webhooks" in rec.content
        off = await server.slash("settings", user=admin, alt_text_channels="off")
        assert "Automatic alt text" in (await server.wait_for_callback(off)).text
        assert not (await bot_config(server, prefix)).alt_text_channels


async def bot_config(server: DiscordServer, prefix: str) -> GuildConfig:
    async with Redis.from_url(REDIS_URL) as redis:
        return await GuildConfigStore(redis, Keys(prefix)).get(server.guild.id)


async def test_the_reply_goes_when_the_original_goes_or_gets_alt_text(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    poster = server.user("kim")
    deleted = await post_art(server, poster, [picture(server, 31)])
    reply = (await reply_to(server, deleted)).response
    await server.delete_message(deleted)
    await server.recorder.wait_for(
        lambda r: r.method == "DELETE" and r.params.get("message_id") == reply["id"]
    )
    fixed = await post_art(server, poster, [picture(server, 32)])
    reply = (await reply_to(server, fixed)).response
    described = [{**a, "description": "my own words"} for a in fixed["attachments"]]
    await server.edit_message(fixed, attachments=described)
    await server.recorder.wait_for(
        lambda r: r.method == "DELETE" and r.params.get("message_id") == reply["id"]
    )
    removed = await post_art(server, poster, [picture(server, 33)])
    reply = (await reply_to(server, removed)).response
    await server.press(reply, "Remove", user=poster)
    await server.recorder.wait_for(
        lambda r: r.method == "DELETE" and r.params.get("message_id") == reply["id"]
    )


async def test_a_message_deleted_before_its_description_leaves_nothing(
    server: DiscordServer, bot: PalicordBot, prefix: str
) -> None:
    async with running_worker(worker_settings(prefix), ShapesOracle(sleep_s=0.5)):
        quick = await post_art(server, server.user("lu"), [picture(server, 41)])
        await asyncio.sleep(0.2)  # queued and being described
        await server.delete_message(quick)
        control = await post_art(server, server.user("mo"), [picture(server, 42)])
        await reply_to(server, control)
        await asyncio.sleep(0.3)
    assert not server.recorder.matching(is_reply_to(quick))  # type: ignore[arg-type]


async def test_a_flood_is_capped_and_delays_nobodys_describe(
    server: DiscordServer, bot: PalicordBot, prefix: str
) -> None:
    since = server.recorder.next_seq()
    settings = worker_settings(prefix, batch_size=1)
    keys = bot.queue.keys
    unit = background_unit(str(server.guild.id))
    async with running_worker(settings, ShapesOracle(sleep_s=0.4), kind=RecordingWorker) as w:
        assert isinstance(w, RecordingWorker)
        flooder = server.user("nat")
        await asyncio.gather(
            *(post_art(server, flooder, [picture(server, 100 + i)]) for i in range(50))
        )

        def taken_alt() -> int:
            return sum(j.startswith("alt-") for b in w.batches_taken for j in b)

        async def queued_alt() -> int:
            return int(await aw(bot.redis.hget(keys.guild_queued, unit)) or 0)

        async with asyncio.timeout(20):  # every picture the cap let through is queued
            while taken_alt() + await queued_alt() < 5:  # noqa: ASYNC110 (state in Redis)
                await asyncio.sleep(0.02)
        taken_before = len(w.batches_taken)
        image = server.attachment(png_bytes(one_shape_scene(seed=7).image), "ask.png")
        state = await server.slash("describe", user=server.user("oz"), attachments={"image": image})
        await answer_for(server, state, timeout_s=20)
        await server.recorder.wait_for(
            lambda r: r.key == REPLY and "AI description" in r.content,
            since=since, count=5, timeout_s=20,
        )  # fmt: skip
        await asyncio.sleep(0.5)
    assert len(alt_replies(server, since)) == 5  # ALT_TEXT_PER_CHANNEL_PER_HOUR, whatever the flood
    # Taken in the first batch after it was queued (the worker takes one batch ahead of the
    # one it runs), ahead of the alt text still waiting.
    [asked] = [i for i, b in enumerate(w.batches_taken) if any(not j.startswith("alt-") for j in b)]
    assert asked <= taken_before + 1
    assert taken_before + 1 >= 4 or any(
        j.startswith("alt-") for b in w.batches_taken[asked + 1 :] for j in b
    )


@pytest.mark.slow  # a whole python -m bot process
def test_a_refused_message_content_intent_ends_the_bot_with_what_to_switch_on(
    prefix: str,
) -> None:
    async def run() -> subprocess.CompletedProcess[bytes]:
        server = DiscordServer()
        server.gateway.granted_intents = 0
        await server.start()
        try:
            env = bot_env(server, prefix, MESSAGE_CONTENT_INTENT="true")
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", env=env, cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return subprocess.CompletedProcess([], proc.returncode or 0, out, err)
        finally:
            await server.close()

    done = asyncio.run(run())
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert "Message Content Intent" in stderr and "MESSAGE_CONTENT_INTENT" in stderr
    assert "Traceback" not in stderr


async def test_settings_explain_the_intent_when_it_is_off(
    server: DiscordServer, prefix: str
) -> None:
    async with running_bot(bot_settings(server, prefix)):
        art = server.guild.channel_named("art")
        admin = server.user("boss", admin=True)
        state = await server.slash("settings", user=admin, alt_text_channels=f"<#{art.id}>")
        shown = await server.wait_for_callback(state)
        assert "Message Content" in shown.text and "MESSAGE_CONTENT_INTENT" in shown.text
        ignored = await post_art(server, server.user("pia"), [picture(server, 51)])
        await asyncio.sleep(0.5)
        assert not server.recorder.matching(is_reply_to(ignored))  # type: ignore[arg-type]
