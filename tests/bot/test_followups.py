"""Follow-ups on an answer through the real bot and the local Discord-compatible server: its
buttons run on the same picture without the CDN being asked again, still work after the
bot restarts, say so politely once the picture is gone, count against the presser's own
limits; a reply to an answer asks about the same picture; an identical request is answered
from the shared cache without any job reaching the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.queue import Keys
from inference.queue.memory import PICTURE, picture_digest
from inference.worker.testing import ShapesOracle
from sandbox.discord import DiscordServer, InteractionState
from tests.support.discord_server.expect import answer_for, boxes, error_for, reply_answer
from tests.support.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_worker,
    worker_settings,
)
from tests.support.queue import RecordingWorker


@pytest.fixture
async def worker(prefix: str) -> AsyncIterator[RecordingWorker]:
    """An in-process worker that remembers its batches (to prove a cache hit ran none)."""
    settings = worker_settings(prefix)
    async with running_worker(settings, ShapesOracle(), kind=RecordingWorker) as worker:
        assert isinstance(worker, RecordingWorker)
        yield worker


@pytest.fixture
async def bot(server: DiscordServer, prefix: str) -> AsyncIterator[PalicordBot]:
    async with running_bot(bot_settings(server, prefix, instance_id="bot-followups")) as bot:
        yield bot


def cdn_fetches(server: DiscordServer) -> int:
    return len(server.recorder.matching(lambda r: r.route == "/cdn"))


def message_of(server: DiscordServer, state: InteractionState) -> dict[str, object]:
    """The answer message as the server holds it now (with its buttons)."""
    assert state.original is not None
    return server.messages[int(state.original["id"])]


async def test_each_button_answers_about_the_same_picture_without_a_new_download(
    server: DiscordServer, bot: PalicordBot, worker: RecordingWorker
) -> None:
    scene = one_shape_scene(seed=91)
    shape = scene.shapes[0]
    image = server.attachment(png_bytes(scene.image), "s.png")
    user = server.user("ann")
    first = await server.slash("describe", user=user, attachments={"image": image})
    await answer_for(server, first)
    message = message_of(server, first)
    labels = ["Ask about this image", "Describe in detail", "Detect…", "Read text"]
    assert all(label in str(message["components"]) for label in labels)
    fetched = cdn_fetches(server)

    pressed = await server.press(message, "Read text", user=user)
    await answer_for(server, pressed)
    pressed = await server.press(message, "Describe in detail", user=user)
    assert shape.kind in (await answer_for(server, pressed)).text
    pressed = await server.press(message, "Ask about this image", user=user)
    await server.wait_for_callback(pressed)
    submitted = await server.submit_modal(pressed, {"Your question": "what color is it?"})
    assert shape.color in (await answer_for(server, submitted)).text
    pressed = await server.press(message, "Detect…", user=user)
    await server.wait_for_callback(pressed)
    submitted = await server.submit_modal(pressed, {"Objects to find": shape.kind})
    [found] = boxes(await answer_for(server, submitted))
    assert found["label"] == shape.kind
    assert cdn_fetches(server) == fetched, "a follow-up downloaded the picture again"


async def test_buttons_work_after_a_restart_and_say_when_the_picture_is_gone(
    server: DiscordServer, prefix: str, worker: RecordingWorker
) -> None:
    settings = bot_settings(server, prefix, instance_id="bot-restarts")
    scene = one_shape_scene(seed=92)
    data = png_bytes(scene.image)
    async with running_bot(settings):
        image = server.attachment(data, "r.png")
        state = await server.slash("describe", user=server.user("bo"), attachments={"image": image})
        await answer_for(server, state)
        message = message_of(server, state)
    async with running_bot(settings):  # a new process would hold no more than this one
        pressed = await server.press(message, "Describe in detail", user=server.user("cy"))
        assert scene.shapes[0].kind in (await answer_for(server, pressed)).text
        redis = Redis.from_url(REDIS_URL)
        async with redis:
            await redis.delete(Keys(prefix).stash(PICTURE, picture_digest(data)))
        for label in ("Read text", "Ask about this image"):
            pressed = await server.press(message, label, user=server.user("di"))
            error = await error_for(server, pressed)
            assert "upload it again" in error.text and error.ephemeral


async def test_a_reply_to_an_answer_asks_about_the_same_picture(
    server: DiscordServer, bot: PalicordBot, worker: RecordingWorker
) -> None:
    scene = one_shape_scene(seed=93)
    shape = scene.shapes[0]
    image = server.attachment(png_bytes(scene.image), "q.png")
    state = await server.slash("describe", user=server.user("ed"), attachments={"image": image})
    await answer_for(server, state)
    answer = message_of(server, state)
    fetched = cdn_fetches(server)
    since = server.recorder.next_seq()
    question = await server.post_message(
        server.user("fay"), f"what color is the {shape.kind}?", mention_bot=True, reply_to=answer
    )
    reply = await reply_answer(server, question, since=since)
    assert shape.color in reply.text
    assert cdn_fetches(server) == fetched


async def test_an_identical_request_is_answered_from_the_cache_without_a_job(
    server: DiscordServer, bot: PalicordBot, worker: RecordingWorker
) -> None:
    scene = one_shape_scene(seed=94)
    data = png_bytes(scene.image)
    first = await server.slash(
        "describe", user=server.user("gil"), attachments={"image": server.attachment(data, "a.png")}
    )
    fresh = await answer_for(server, first)
    batches = len(worker.batches_taken)
    again = await server.slash(
        "describe", user=server.user("hal"), attachments={"image": server.attachment(data, "b.png")}
    )
    cached = await answer_for(server, again)
    assert len(worker.batches_taken) == batches, "the cached request reached the worker"
    assert "From the cache" in cached.text and "From the cache" not in fresh.text
    assert "answered just now" in cached.text  # asked in this server: when is no secret
    assert fresh.payload["embeds"][0]["description"] == cached.payload["embeds"][0]["description"]
    # Asked in another server: the answer is shared, when it was first asked is not.
    elsewhere = await server.slash(
        "describe", user=server.user("jo"), guild=server.guilds[1],
        attachments={"image": server.attachment(data, "d.png")},
    )  # fmt: skip
    shared = await answer_for(server, elsewhere)
    assert "From the cache" in shared.text and "answered" not in shared.text
    assert len(worker.batches_taken) == batches
    # Another question about the same picture is not the same request: it is computed.
    other = await server.slash(
        "ask", user=server.user("ivy"), attachments={"image": server.attachment(data, "c.png")},
        question="what color is it?",
    )  # fmt: skip
    assert "From the cache" not in (await answer_for(server, other)).text
    assert len(worker.batches_taken) == batches + 1


async def test_a_press_counts_against_the_pressers_own_cooldown(
    server: DiscordServer, prefix: str, worker: RecordingWorker
) -> None:
    settings = bot_settings(server, prefix, user_cooldown_s=30.0)
    async with running_bot(settings):
        scene = one_shape_scene(seed=95)
        image = server.attachment(png_bytes(scene.image), "c.png")
        owner, other = server.user("jo"), server.user("kim")
        state = await server.slash("describe", user=owner, attachments={"image": image})
        await answer_for(server, state)
        message = message_of(server, state)
        # The requester is cooling down; someone else's press is theirs to spend.
        pressed = await server.press(message, "Read text", user=other)
        await answer_for(server, pressed)
        again = await server.press(message, "Read text", user=other)
        assert "wait" in (await error_for(server, again)).text
        mine = await server.press(message, "Read text", user=owner)
        assert "wait" in (await error_for(server, mine)).text


async def test_commands_work_in_direct_messages_with_a_quota_per_user(
    server: DiscordServer, prefix: str, worker: RecordingWorker
) -> None:
    settings = bot_settings(server, prefix, user_daily_quota=1)
    async with running_bot(settings):
        describe = server.command("describe")
        assert (describe["contexts"], describe["integration_types"]) == ([0, 1, 2], [0, 1])
        assert server.command("settings")["contexts"] == [0]
        scene = one_shape_scene(seed=96)
        image = server.attachment(png_bytes(scene.image), "dm.png")
        lee, max_ = server.user("lee"), server.user("max")
        state = await server.slash("describe", user=lee, attachments={"image": image}, dm=True)
        answer = await answer_for(server, state)
        assert scene.shapes[0].kind in answer.text
        assert answer.params["token"] == state.token  # delivered privately, by its token
        # The day's quota in DMs is each person's own (USER_DAILY_QUOTA): another person
        # is not refused.
        other = await server.slash("describe", user=max_, attachments={"image": image}, dm=True)
        await answer_for(server, other)
        again = await server.slash("ocr", user=lee, attachments={"image": image}, dm=True)
        refusal = (await error_for(server, again)).text
        assert "your own quota of 1 images" in refusal and "resets at midnight UTC, in" in refusal
