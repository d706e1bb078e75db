"""Pictures that are not attachments, through the real bot and the Discord-compatible
server: pasted links (allowed hosts fetched, others only through Discord's preview, never
fetched), animations (answered about one frame, named), stickers and custom emoji."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from PIL import Image

from bot.client import PalicordBot
from bot.pictures import links_in, question_text
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from sandbox.discord import payloads as p
from tests.support.discord_server.expect import answer_for, boxes, reply_answer, sent_file
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
)

OTHER_HOST = "127.0.0.2"  # a loopback address the bot must never connect to


def test_links_and_emoji_are_pictures_not_words() -> None:
    text = (
        "what's <a:party:123456789012345678> this (https://i.imgur.com/a.gif), "
        "and <https://example.com/b.png>? https://i.imgur.com/a.gif"
    )
    assert links_in(text) == ["https://i.imgur.com/a.gif", "https://example.com/b.png"]
    assert question_text(text) == "what's this ( ), and ?"
    assert question_text("<:blob:123456789012345678> describe") == "describe"
    assert question_text("<@99> hello") == "<@99> hello"  # mentions are left to the caller


class Listener:
    """A web server that counts every request it gets."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hits = 0
        self.port = 0
        self.redirect_to = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        body = png_bytes(one_shape_scene(seed=40).image)
        return web.Response(body=body, content_type="image/png")


@pytest.fixture
async def elsewhere() -> AsyncIterator[Listener]:
    listener = Listener(OTHER_HOST)
    await listener.start()
    yield listener
    await listener.close()


@pytest.fixture
async def bot(server: DiscordServer, prefix: str) -> AsyncIterator[PalicordBot]:
    # Links may point to 127.0.0.1 (the fake CDN, and a redirector below), nowhere else.
    settings = bot_settings(
        server, prefix, image_link_hosts=("127.0.0.1",), link_preview_wait_s=1.5
    )
    async with running_bot(settings) as running:
        yield running


def scene_words(seed: int) -> tuple[str, str]:
    scene = one_shape_scene(seed=seed)
    return scene.shapes[0].color, scene.shapes[0].kind


async def mention(server: DiscordServer, content: str, **kwargs: object) -> str:
    """The text of the bot's answer to a mention: its reply, or the edit with the answer
    (a refusal before anything is queued is the reply itself)."""
    since = server.recorder.next_seq()
    msg = await server.post_message(
        server.user("zoe"),
        content,
        mention_bot=True,
        **kwargs,  # type: ignore[arg-type]
    )
    [reply] = await server.recorder.wait_for(
        lambda r: (
            r.key == "POST /channels/{channel_id}/messages"
            and str((r.json or {}).get("message_reference", {}).get("message_id")) == msg["id"]
        ),
        since=since,
        timeout_s=10.0,
    )
    if reply.content.startswith("⚠️"):
        return reply.text
    return (await reply_answer(server, msg, since=since)).text


async def test_a_link_on_an_allowed_host_is_answered_and_left_out_of_the_question(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=41)
    link = server.add_cdn_file(png_bytes(scene.image), "shape.png", "image/png")
    kind = scene.shapes[0].kind
    since = server.recorder.next_seq()
    # Without the link the text reads "detect <kind>": a detection, not a question.
    msg = await server.post_message(server.user("yan"), f"{link} detect {kind}", mention_bot=True)
    answer = await reply_answer(server, msg, since=since)
    assert [b["label"] for b in boxes(answer)] == [kind]


@pytest.mark.slow
async def test_a_link_elsewhere_is_never_fetched_and_the_reply_names_the_hosts(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    text = await mention(server, f"what is this? {elsewhere.url('/cat.png')}")
    assert "⚠️" in text and "127.0.0.1" in text and "preview" in text
    assert elsewhere.hits == 0


async def test_a_link_without_a_preview_to_come_is_refused_at_once(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    # <link> asks Discord for no preview: no wait for one (LINK_PREVIEW_WAIT_S is 1.5 s).
    started = asyncio.get_running_loop().time()
    text = await mention(server, f"<{elsewhere.url('/no-preview.png')}>")
    assert asyncio.get_running_loop().time() - started < 1.0
    assert "⚠️" in text and "127.0.0.1" in text
    assert elsewhere.hits == 0


async def test_a_redirect_off_the_allowed_hosts_is_not_followed(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    redirector = Listener("127.0.0.1")
    redirector.redirect_to = elsewhere.url("/cat.png")
    await redirector.start()
    try:
        text = await mention(server, redirector.url("/short"))
    finally:
        await redirector.close()
    assert redirector.hits == 1
    assert elsewhere.hits == 0
    assert "⚠️" in text and "127.0.0.1" in text


async def test_a_preview_embed_is_used_instead_of_the_link(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    scene = one_shape_scene(seed=42)
    link = elsewhere.url("/page")
    proxied = server.add_cdn_file(png_bytes(scene.image), "page.png", "image/png")
    text = await mention(server, f"caption {link}", embeds=[p.preview_embed(link, proxied)])
    colour, kind = scene_words(42)
    assert f"{colour} {kind}" in text
    assert elsewhere.hits == 0


async def test_a_preview_that_arrives_in_a_message_update_is_used(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    scene = one_shape_scene(seed=43)
    link = elsewhere.url("/later")
    proxied = server.add_cdn_file(png_bytes(scene.image), "later.png", "image/png")
    since = server.recorder.next_seq()
    msg = await server.post_message(server.user("xia"), link, mention_bot=True)
    await asyncio.sleep(0.3)  # Discord unfurls a moment after the message
    await server.add_preview(msg, p.preview_embed(link, proxied))
    answer = await reply_answer(server, msg, since=since)
    colour, kind = scene_words(43)
    assert f"{colour} {kind}" in answer.text
    assert elsewhere.hits == 0


async def test_an_animated_gif_is_answered_about_its_middle_frame(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=44)
    blank = [Image.new("RGB", scene.image.size, (245, 245, 240 - i)) for i in range(4)]
    frames = [blank[0], blank[1], scene.image, blank[2], blank[3]]  # the shape is frame 3
    gif = png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    image = server.attachment(gif, "anim.gif", "image/gif")
    kind = scene.shapes[0].kind
    since = server.recorder.next_seq()
    msg = await server.post_message(
        server.user("wu"), f"detect {kind}", attachments=[image], mention_bot=True
    )
    answer = await reply_answer(server, msg, since=since)
    assert "frame 3 of 5" in answer.text.lower()
    # The shape is on frame 3 only: the worker found it there, and the boxes are drawn
    # on that frame (the shape's colour inside the box, not the blank frames' background).
    [box] = boxes(answer)
    drawn = Image.open(io.BytesIO(sent_file(answer, ".png").data)).convert("RGB")
    x1, y1, x2, y2 = box["box"]
    scale = drawn.width / scene.image.width
    centre = drawn.getpixel((int((x1 + x2) / 2 * scale), int((y1 + y2) / 2 * scale)))
    want = scene.image.getpixel((int((x1 + x2) / 2), int((y1 + y2) / 2)))
    assert isinstance(centre, tuple) and isinstance(want, tuple)
    assert all(abs(a - b) <= 8 for a, b in zip(centre, want, strict=True)), (centre, want)
    text = await mention(server, "", attachments=[image])
    colour, _ = scene_words(44)
    assert f"{colour} {kind}" in text and "frame 3 of 5" in text.lower()


async def test_a_png_sticker_and_a_custom_emoji_are_answered(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    sticker = server.sticker(png_bytes(one_shape_scene(seed=45).image), "shape")
    text = await mention(server, "", stickers=[sticker])
    assert "{} {}".format(*scene_words(45)) in text
    emoji = server.emoji(png_bytes(one_shape_scene(seed=46).image), "blob")
    text = await mention(server, f"describe {emoji}")
    # "describe" alone once the emoji is out of the question: a long description.
    assert "a picture of one {} {}".format(*scene_words(46)) in text


async def test_a_lottie_sticker_is_refused_clearly(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    sticker = server.sticker(b'{"v": "5.5.7", "layers": []}', "wave", p.STICKER_LOTTIE)
    text = await mention(server, "", stickers=[sticker])
    assert "⚠️" in text and "vector stickers" in text


async def test_a_context_menu_reads_a_messages_link_preview(
    server: DiscordServer, bot: PalicordBot, worker: Worker, elsewhere: Listener
) -> None:
    scene = one_shape_scene(seed=47)
    link = elsewhere.url("/menu")
    proxied = server.add_cdn_file(png_bytes(scene.image), "menu.png", "image/png")
    target = await server.post_message(
        server.user("vic"), f"look {link}", embeds=[p.preview_embed(link, proxied)]
    )
    state = await server.message_command("Describe image", target, user=server.user("uli"))
    answer = await answer_for(server, state)
    assert "{} {}".format(*scene_words(47)) in answer.text
    assert elsewhere.hits == 0
