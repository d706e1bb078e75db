"""End to end: the real bot, the fake Discord, the real Redis queue and an in-process worker
running the shapes oracle engine."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence

import pytest
from PIL import Image

from bot import delivery
from bot.answer import Answer, ItemAnswer, compose
from bot.client import PalicordBot
from inference.annotate import label_color
from inference.demo.shapes import BACKGROUND, COLORS
from inference.detection import iou
from inference.display import DISPLAY_MAX_SIDE_PX
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import (
    DEFERRED_CHANNEL_MESSAGE,
    answer_for,
    boxes,
    reply_answer,
    sent_file,
)
from tests.support.discord_server.harness import noisy_png, one_shape_scene, png_bytes
from tests.support.discord_server.render_checks import assert_safe


async def test_describe_slash_command_end_to_end(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=1)
    shape = scene.shapes[0]
    user = server.user("alice", locale="de")
    image = server.attachment(png_bytes(scene.image), "shapes.png")

    state = await server.slash("describe", user=user, attachments={"image": image})

    callback = await server.wait_for_callback(state)
    assert callback.json["type"] == DEFERRED_CHANNEL_MESSAGE
    assert state.callback_at is not None and state.callback_at - state.dispatched_at < 3.0
    answer = await answer_for(server, state)
    assert f"a {shape.color} {shape.kind}" in answer.text
    assert "(de)" in answer.text, "the user's Discord locale picks the language"
    assert answer.json["allowed_mentions"]["parse"] == []
    # Exactly one final answer, and it came after every progress edit.
    sent = server.sent_for(state)
    assert [r for r in sent if r.embed_text] == [answer]
    assert sent[-1] is answer


async def test_explicit_language_wins_and_long_detail(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=2)
    user = server.user("bob", locale="de")
    image = server.attachment(png_bytes(scene.image), "s.png")
    state = await server.slash(
        "describe", user=user, attachments={"image": image}, detail="long", language="fr"
    )
    answer = await answer_for(server, state)
    assert "a picture of one" in answer.text  # describe, not caption

    unsupported = server.user("carol", locale="ko")
    state = await server.slash("describe", user=unsupported, attachments={"image": image})
    assert "(ko)" in (await answer_for(server, state)).text

    klingon = server.user("dan", locale="en-US")
    state = await server.slash(
        "describe", user=klingon, attachments={"image": image}, language="tlh"
    )
    callback = await server.wait_for_callback(state)
    assert callback.ephemeral and "not supported" in callback.content


async def test_ask_answers_the_colour(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=3)
    image = server.attachment(png_bytes(scene.image), "q.png")
    state = await server.slash(
        "ask", user=server.user("erin"), attachments={"image": image}, question="what colour?"
    )
    answer = await answer_for(server, state)
    assert scene.shapes[0].color in answer.text


async def test_detect_returns_annotated_png_and_boxes(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=4, size=(200, 150))
    shape = scene.shapes[0]
    image = server.attachment(png_bytes(scene.image), "d.png")
    state = await server.slash(
        "detect", user=server.user("finn"), attachments={"image": image}, objects=shape.kind
    )
    answer = await answer_for(server, state)
    assert f"{shape.kind} × 1" in answer.text
    png = sent_file(answer, ".png")
    drawn = Image.open(io.BytesIO(png.data))
    assert drawn.format == "PNG" and drawn.size == scene.image.size
    [found] = boxes(answer)
    assert found["label"] == shape.kind
    assert iou(found["box"], shape.box) >= 0.5
    embed = answer.payload["embeds"][0]
    assert embed["image"]["url"] == f"attachment://{png.filename}"


async def test_detect_respects_the_guilds_upload_limit(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    # Discord sends the destination's limit with each interaction; a picture PNG cannot
    # squeeze under it must come back as a JPEG that fits, named .jpg.
    limit = 150 * 1024
    server.guild.filesize_limit = limit
    image = server.attachment(noisy_png(300), "noise.png")
    state = await server.slash(
        "detect", user=server.user("nia"), attachments={"image": image}, objects="square"
    )
    answer = await answer_for(server, state)
    picture = sent_file(answer, ".jpg")
    assert Image.open(io.BytesIO(picture.data)).format == "JPEG"
    assert sum(len(f.data) for f in answer.files) <= limit
    assert answer.payload["embeds"][0]["image"]["url"] == f"attachment://{picture.filename}"


async def test_mention_with_image_and_reply_to_image(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=5)
    shape = scene.shapes[0]
    user = server.user("gus")
    since = server.recorder.next_seq()
    msg = await server.post_message(
        user, attachments=[server.attachment(png_bytes(scene.image), "m.png")], mention_bot=True
    )
    answer = await reply_answer(server, msg, since=since)
    assert f"a {shape.color} {shape.kind}" in answer.text

    # A mention that replies to someone else's image: the image of the replied-to message.
    other = await server.post_message(
        server.user("hana"), attachments=[server.attachment(png_bytes(scene.image), "r.png")]
    )
    since = server.recorder.next_seq()
    ask = await server.post_message(user, "what colour is it?", mention_bot=True, reply_to=other)
    answer = await reply_answer(server, ask, since=since)
    assert shape.color in answer.text


async def test_mention_with_several_images_labels_each(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scenes = [one_shape_scene(seed=s) for s in (11, 12, 13)]
    files = [server.attachment(png_bytes(s.image), f"pic{i}.png") for i, s in enumerate(scenes)]
    since = server.recorder.next_seq()
    msg = await server.post_message(
        server.user("ivy"), "describe", attachments=files, mention_bot=True
    )
    answer = await reply_answer(server, msg, since=since)
    embeds = answer.payload["embeds"]
    assert [e["title"] for e in embeds] == [f"Image {i + 1} · pic{i}.png" for i in range(3)]
    for embed, scene in zip(embeds, scenes, strict=True):
        assert f"{scene.shapes[0].color} {scene.shapes[0].kind}" in embed["description"]


async def test_context_menus(server: DiscordServer, bot: PalicordBot, worker: Worker) -> None:
    scene = one_shape_scene(seed=6)
    shape = scene.shapes[0]
    user = server.user("jo")
    target = await server.post_message(
        server.user("kim"), attachments=[server.attachment(png_bytes(scene.image), "c.png")]
    )

    state = await server.message_command("Describe image", target, user=user)
    assert f"a {shape.color} {shape.kind}" in (await answer_for(server, state)).text

    state = await server.message_command("Read text (OCR)", target, user=user)
    answer = await answer_for(server, state)
    assert_safe(answer)
    assert "loud" in answer.text

    state = await server.message_command("Detect objects…", target, user=user)
    callback = await server.wait_for_callback(state)
    assert callback.json["type"] == 9  # MODAL
    submitted = await server.submit_modal(state, {"Objects to find": f"{shape.kind}, dog"})
    answer = await answer_for(server, submitted)
    [found] = boxes(answer)
    assert iou(found["box"], shape.box) >= 0.5


async def test_expired_token_answer_goes_to_the_channel(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=8)
    user = server.user("lee")
    image = server.attachment(png_bytes(scene.image), "e.png")
    since = server.recorder.next_seq()
    state = await server.slash("describe", user=user, attachments={"image": image})
    # Expired before the bot even saw it: acknowledging still works (that is the
    # callback), but no webhook edit does, as with a token past its 15 minutes.
    server.expire(state)
    [post] = await server.recorder.wait_for(
        lambda r: r.key == "POST /channels/{channel_id}/messages" and bool(r.payload.get("embeds")),
        since=since,
    )
    assert post.content.startswith(f"<@{user.id}>")
    allowed = post.json["allowed_mentions"]
    assert [str(u) for u in allowed["users"]] == [str(user.id)]
    assert "everyone" not in allowed["parse"] and "roles" not in allowed["parse"]
    assert scene.shapes[0].kind in post.text


def big_square_png(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """A demo-coloured picture of `size` with one red square at `box` (a small file)."""
    image = Image.new("RGB", size, BACKGROUND)
    image.paste(COLORS["red"], box)
    return png_bytes(image, compress_level=9)


@pytest.mark.slow
async def test_detect_on_a_large_picture_is_drawn_at_display_size(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    # 12 megapixels: the worker sends a 1,600 px copy with the boxes, and the bot draws
    # on that. Before issue 19 the bot decoded the upload and drew at 4,000 x 3,000.
    box = (1000, 1000, 2000, 2000)
    image = server.attachment(big_square_png((4000, 3000), box), "big.png")
    state = await server.slash(
        "detect", user=server.user("gus"), attachments={"image": image}, objects="square"
    )
    answer = await answer_for(server, state, timeout_s=30)
    picture = next(f for f in answer.files if not f.filename.endswith(".json"))
    drawn = Image.open(io.BytesIO(picture.data)).convert("RGB")
    assert drawn.size == (DISPLAY_MAX_SIDE_PX, 1200)
    [found] = boxes(answer)
    assert iou(found["box"], box) >= 0.9  # still in the upload's pixels
    # The outline is drawn just inside the box, scaled to the copy: (400, 400)-(800, 800).
    edge = drawn.getpixel((600, 403))
    assert isinstance(edge, tuple)
    assert sum(abs(a - b) for a, b in zip(edge, label_color("square"), strict=True)) < 60


async def test_a_slow_drawing_does_not_hold_up_other_answers(
    server: DiscordServer, bot: PalicordBot, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first request's composition is held (standing in for a drawing that takes
    # long) until the second request has its answer. Before issue 19 the results loop
    # composed one answer at a time: the second waited behind the first, and this test
    # timed out.
    slow_started, release = threading.Event(), threading.Event()

    def held_compose(items: Sequence[ItemAnswer], *, max_file_bytes: int) -> Answer:
        if any(item.label == "slow.png" for item in items):
            slow_started.set()
            release.wait(timeout=30)
        return compose(items, max_file_bytes=max_file_bytes)

    monkeypatch.setattr(delivery, "compose", held_compose)
    first = one_shape_scene(seed=8, size=(200, 150))
    second = one_shape_scene(seed=9, size=(200, 150))
    try:
        slow = await server.slash(
            "detect",
            user=server.user("hal"),
            attachments={"image": server.attachment(png_bytes(first.image), "slow.png")},
            objects=first.shapes[0].kind,
        )
        assert await asyncio.to_thread(slow_started.wait, 10)
        quick = await server.slash(
            "detect",
            user=server.user("ida"),
            attachments={"image": server.attachment(png_bytes(second.image), "quick.png")},
            objects=second.shapes[0].kind,
        )
        quick_answer = await answer_for(server, quick, timeout_s=10)
        assert f"{second.shapes[0].kind} × 1" in quick_answer.text
        assert not [r for r in server.sent_for(slow) if r.embed_text]  # still drawing
    finally:
        release.set()
    slow_answer = await answer_for(server, slow, timeout_s=10)
    assert f"{first.shapes[0].kind} × 1" in slow_answer.text
