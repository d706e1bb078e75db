"""Hostile and broken uploads through the real bot: each gets its own short, private error,
nothing is fetched from hosts that are not allowed, and good requests keep flowing."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest
from PIL import Image

from bot.client import PalicordBot
from inference.worker.service import Worker
from sandbox.discord import DiscordServer
from tests.support.discord_server.expect import answer_for, error_for, reply_answer
from tests.support.discord_server.harness import one_shape_scene, png_bytes
from tests.support.hostile import progressive_jpeg, repeated_scans, with_trailer

MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width` × `height` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = png_bytes(one_shape_scene(seed=21).image, "JPEG", quality=90)
    return data[: len(data) // 2]


def scan_bomb() -> bytes:
    """A 0.1 MB progressive JPEG whose last scan repeats 2,000 times (issue 19)."""
    return repeated_scans(progressive_jpeg((2000, 2000)), 2_000)


def cdn_fetches(server: DiscordServer, since: int) -> int:
    return len(server.recorder.matching(lambda r: r.route == "/cdn", since=since))


@pytest.mark.parametrize(
    "case",
    [
        ("empty.png", b"", "image/png", "empty"),
        ("cut.jpg", truncated_jpeg(), "image/jpeg", "incomplete"),
        ("notes.png", b"just some text, not a picture\n" * 4, "image/png", "not an image"),
        ("bomb.png", png_declaring(50_000, 50_000), "image/png", "too many pixels"),
        ("scans.jpg", scan_bomb(), "image/jpeg", "more than 64 scans"),
    ],
)
async def test_broken_upload_gets_its_specific_error(
    server: DiscordServer,
    bot: PalicordBot,
    worker: Worker,
    case: tuple[str, bytes, str, str],
) -> None:
    name, data, content_type, expected = case
    image = server.attachment(data, name, content_type)
    state = await server.slash(
        "describe", user=server.user("mallory"), attachments={"image": image}
    )
    error = await error_for(server, state)
    assert expected in error.content.lower()
    assert error.content.startswith("⚠️")
    assert not server.sent_for(state) or all(not r.embed_text for r in server.sent_for(state))


async def test_too_large_declared_is_refused_without_download(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    since = server.recorder.next_seq()
    big = server.attachment(b"\x89PNG" + b"\x00" * 16, "big.png", size=3 * MiB)
    state = await server.slash("describe", user=server.user("oscar"), attachments={"image": big})
    error = await error_for(server, state)
    assert "too large" in error.content and "2 MiB" in error.content
    assert cdn_fetches(server, since) == 0


async def test_too_large_in_fact_is_cut_off_while_downloading(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    liar = server.attachment(b"\x89PNG" + b"\x00" * (3 * MiB), "liar.png", size=1000)
    state = await server.slash("describe", user=server.user("peggy"), attachments={"image": liar})
    error = await error_for(server, state)
    assert "too large" in error.content


async def test_attachment_on_a_host_not_allowed_is_never_fetched(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    since = server.recorder.next_seq()
    good = png_bytes(one_shape_scene(seed=22).image)
    # Same server, but "localhost" is not an allowed host: the bot must not even connect.
    served = server.attachment(good, "elsewhere.png")
    foreign = {**served, "url": served["url"].replace("127.0.0.1", "localhost")}
    state = await server.slash(
        "describe", user=server.user("trent"), attachments={"image": foreign}
    )
    error = await error_for(server, state)
    assert "uploaded to Discord" in error.content
    assert cdn_fetches(server, since) == 0


async def test_animated_gif_answers_its_first_frame(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=23)
    blank = Image.new("RGB", scene.image.size, (245, 245, 240))
    gif = png_bytes(scene.image, "GIF", save_all=True, append_images=[blank], duration=100, loop=0)
    image = server.attachment(gif, "anim.gif", "image/gif")
    state = await server.slash("describe", user=server.user("uma"), attachments={"image": image})
    answer = await answer_for(server, state)
    assert f"{scene.shapes[0].color} {scene.shapes[0].kind}" in answer.text


async def test_a_motion_photo_is_answered(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    """A phone's motion photo: a JPEG with a video after its end. The marker search this
    replaced refused about half of them as incomplete (this trailer among them)."""
    scene = one_shape_scene(seed=26)
    jpeg = png_bytes(scene.image, "JPEG", quality=95)
    for seed in range(100):
        motion = with_trailer(jpeg, 200_000, seed=seed)
        tail = motion[motion.rfind(b"\xff\xd9") + 2 :]
        if b"\xff\xda" in tail:  # what fooled the marker search
            break
    image = server.attachment(motion, "PXL_motion.jpg", "image/jpeg")
    state = await server.slash("describe", user=server.user("xavier"), attachments={"image": image})
    answer = await answer_for(server, state)
    assert f"{scene.shapes[0].color} {scene.shapes[0].kind}" in answer.text


async def test_bad_uploads_do_not_stall_good_requests(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=24)
    good = server.attachment(png_bytes(scene.image), "good.png")
    bad = [
        server.attachment(b"", "e.png"),
        server.attachment(truncated_jpeg(), "t.jpg", "image/jpeg"),
        server.attachment(png_declaring(50_000, 50_000), "b.png"),
        server.attachment(scan_bomb(), "s.jpg", "image/jpeg"),
    ]
    states = await asyncio.gather(
        *(
            server.slash("describe", user=server.user(f"u{i}"), attachments={"image": b})
            for i, b in enumerate(bad)
        ),
        server.slash("describe", user=server.user("victor"), attachments={"image": good}),
    )
    answer = await answer_for(server, states[-1])
    assert scene.shapes[0].kind in answer.text
    for state in states[:-1]:
        await error_for(server, state)


async def test_mention_mixing_good_and_bad_images_answers_each(
    server: DiscordServer, bot: PalicordBot, worker: Worker
) -> None:
    scene = one_shape_scene(seed=25)
    files = [
        server.attachment(png_bytes(scene.image), "fine.png"),
        server.attachment(b"not an image at all", "fake.png"),
    ]
    since = server.recorder.next_seq()
    msg = await server.post_message(server.user("wendy"), attachments=files, mention_bot=True)
    answer = await reply_answer(server, msg, since=since)
    first, second = answer.payload["embeds"]
    assert scene.shapes[0].kind in first["description"]
    assert "not an image" in second["description"]
