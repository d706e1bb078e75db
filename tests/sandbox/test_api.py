"""The sandbox's scripting API (the calls its page makes), driven over HTTP against the real
bot and an in-process worker: uploads, mentions, slash commands, context menus with their
modal, autocomplete, ephemeral errors, and the channel as the page shows it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.client import PalicordBot
from inference.queue import QueueSettings
from inference.worker.service import Worker
from sandbox.__main__ import key_prefix
from sandbox.web import Sandbox
from tests.support.discord_server.harness import (
    bot_settings,
    one_shape_scene,
    png_bytes,
    running_bot,
    running_sandbox,
)

Json = dict[str, Any]


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox(notice="demo", samples={"s.png": b"png"}) as page:
        yield page


@pytest.fixture
async def bot(sandbox: Sandbox, prefix: str) -> AsyncIterator[PalicordBot]:
    async with running_bot(bot_settings(sandbox.server, prefix)) as running:
        yield running


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def call(self, method: str, path: str, *, status: int = 200, **kw: Any) -> Any:
        async with self.session.request(method, self.base + path, **kw) as reply:
            body = await reply.json()
            assert reply.status == status, body
            return body

    async def upload(self, data: bytes, filename: str) -> Json:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename)
        result: Json = await self.call("POST", "/api/attachments", data=form)
        return result

    async def messages(self, channel_id: str) -> list[Json]:
        result: list[Json] = await self.call("GET", f"/api/channels/{channel_id}/messages")
        return result

    async def until(self, channel_id: str, done: Any, timeout_s: float = 15.0) -> list[Json]:
        async with asyncio.timeout(timeout_s):
            while not done(messages := await self.messages(channel_id)):  # noqa: ASYNC110 (polls, as the page does)
                await asyncio.sleep(0.1)
        return messages


@pytest.fixture
async def api(sandbox: Sandbox) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, sandbox.server.base_url)


def answered(m: Json) -> bool:
    return m["author"]["bot"] and bool(m["embeds"]) and not m["thinking"]


async def test_state_lists_servers_users_commands_and_the_bot(
    api: Api, bot: PalicordBot, sandbox: Sandbox
) -> None:
    state = await api.call("GET", "/api/state")
    assert state["sandbox"] is True and state["notice"] == "demo"
    assert state["bot"]["connected"] is True and state["bot"]["name"] == "Palicord"
    assert [s["name"] for s in state["servers"]] == ["Shapes Club", "Art Lounge"]
    assert [u["admin"] for u in state["users"]] == [True, False, False]
    names = {c["name"] for c in state["commands"]}
    assert {"describe", "ask", "detect", "ocr", "queue", "settings", "Detect objects…"} <= names
    assert state["samples"] == ["/samples/s.png"]


async def test_detect_mention_and_context_menu_modal_through_the_api(
    api: Api, bot: PalicordBot, worker: Worker
) -> None:
    state = await api.call("GET", "/api/state")
    channel = state["servers"][0]["channels"][0]["id"]
    ada, ben = (u["id"] for u in state["users"][:2])
    scene = one_shape_scene(seed=81)
    shape = scene.shapes[0]
    picture = await api.upload(png_bytes(scene.image), "shapes.png")
    assert picture["content_type"] == "image/png"
    assert (picture["width"], picture["height"]) == scene.image.size

    # A slash command with an attachment option: deferred, then the annotated answer.
    run = await api.call(
        "POST",
        "/api/interactions",
        json={"channel_id": channel, "user_id": ben, "command": "detect",
              "options": {"image": picture["id"], "objects": shape.kind}},
    )  # fmt: skip
    assert run["acknowledged"] and run["response_type"] == 5 and run["modal"] is None
    messages = await api.until(channel, lambda ms: any(answered(m) for m in ms))
    [answer] = [m for m in messages if answered(m)]
    assert answer["id"] == run["message_id"] and answer["edited"]
    assert answer["interaction_user"]["id"] == ben
    assert f"{shape.kind} × 1" in answer["embeds"][0]["description"]
    files = {a["filename"]: a for a in answer["attachments"]}
    assert files["detections-1.png"]["content_type"] == "image/png"
    async with api.session.get(files["detections-1.png"]["url"]) as reply:
        assert reply.status == 200 and (await reply.read()).startswith(b"\x89PNG")
    assert answer["content"] == "", "the place-in-line text is gone from the final answer"
    [buttons] = answer["buttons"]
    read = next(b for b in buttons if b["label"] == "Read text")
    pressed = await api.call(
        "POST",
        "/api/interactions",
        json={"channel_id": channel, "user_id": ada, "message_id": answer["id"],
              "custom_id": read["custom_id"]},
    )  # fmt: skip
    assert pressed["acknowledged"] and pressed["message_id"] != answer["id"]
    await api.until(
        channel, lambda ms: any(m["id"] == pressed["message_id"] and answered(m) for m in ms)
    )

    # A message that mentions the bot by name, with the picture: a reply with the answer.
    posted = await api.call(
        "POST",
        "/api/messages",
        json={"channel_id": channel, "user_id": ada, "content": "@Palicord what is this?",
              "attachment_ids": [picture["id"]]},
    )  # fmt: skip
    assert posted["content"].startswith("<@") and "what is this?" in posted["content"]
    messages = await api.until(
        channel, lambda ms: any(m["reply_to"] == posted["id"] and answered(m) for m in ms)
    )

    # The "Detect objects…" context menu opens a modal; submitting it runs the detection.
    menu = await api.call(
        "POST",
        "/api/interactions",
        json={"channel_id": channel, "user_id": ben, "command": "Detect objects…",
              "target_message_id": posted["id"]},
    )  # fmt: skip
    modal = menu["modal"]
    assert modal is not None and modal["fields"], menu
    field = modal["fields"][0]["custom_id"]
    submitted = await api.call(
        "POST",
        "/api/interactions",
        json={"channel_id": channel, "user_id": ben,
              "modal": {"custom_id": modal["custom_id"], "values": {field: shape.kind}}},
    )  # fmt: skip
    assert submitted["acknowledged"]
    await api.until(
        channel, lambda ms: any(m["id"] == submitted["message_id"] and answered(m) for m in ms)
    )


async def test_errors_are_ephemeral_and_bad_calls_are_refused(
    api: Api, bot: PalicordBot, worker: Worker
) -> None:
    state = await api.call("GET", "/api/state")
    channel = state["servers"][1]["channels"][0]["id"]
    ben, chen = (u["id"] for u in state["users"][1:])
    fake = await api.upload(b"just some text, not a picture", "notes.png")
    run = await api.call(
        "POST",
        "/api/interactions",
        json={"channel_id": channel, "user_id": ben, "command": "describe",
              "options": {"image": fake["id"]}},
    )  # fmt: skip
    assert run["acknowledged"]
    [error] = await api.until(channel, lambda ms: any(m["ephemeral"] for m in ms))
    assert error["visible_to"] == ben and chen != ben
    assert "image" in (error["content"] + str(error["embeds"])).lower()

    # Autocomplete answers while an option is typed.
    suggested = await api.call(
        "POST",
        "/api/autocomplete",
        json={"channel_id": channel, "user_id": ben, "command": "describe",
              "focused": "language", "options": {"language": "deu"}},
    )  # fmt: skip
    assert any(c["value"] == "de" for c in suggested["choices"]), suggested

    bad = {"channel_id": channel, "user_id": ben}
    await api.call("POST", "/api/interactions", json={**bad, "command": "nope"}, status=400)
    await api.call(
        "POST", "/api/interactions", json={**bad, "command": "detect", "options": {}}, status=400
    )
    await api.call("POST", "/api/messages", json={**bad, "user_id": "1"}, status=400)
    await api.call("POST", "/api/messages", json={**bad, "channel_id": "1"}, status=404)
    await api.call("POST", "/api/attachments", data=b"not a form", status=400)
    await api.call("GET", "/api/channels/1/messages", status=404)


async def test_links_get_previews_and_stickers_can_be_sent(
    api: Api, bot: PalicordBot, worker: Worker
) -> None:
    state = await api.call("GET", "/api/state")
    channel = state["servers"][0]["channels"][0]["id"]
    ada = state["users"][0]["id"]
    png_sticker, lottie = state["stickers"]
    assert png_sticker["url"].startswith(state["cdn_url"] + "/stickers/") and lottie["url"] is None
    assert state["emojis"][0].startswith("<:shapes:")

    # A pasted link to a picture the sandbox serves: not an allowed link host for the bot,
    # so it is answered from the preview the sandbox adds a moment later, as Discord does.
    scene = one_shape_scene(seed=82)
    picture = await api.upload(png_bytes(scene.image), "linked.png")
    posted = await api.call(
        "POST",
        "/api/messages",
        json={"channel_id": channel, "user_id": ada, "content": f"@Palicord {picture['url']}"},
    )
    messages = await api.until(
        channel, lambda ms: any(m["reply_to"] == posted["id"] and answered(m) for m in ms)
    )
    [mine] = [m for m in messages if m["id"] == posted["id"]]
    assert mine["embeds"][0]["thumbnail"]["proxy_url"].startswith(state["cdn_url"] + "/external/")
    [answer] = [m for m in messages if m["reply_to"] == posted["id"]]
    shape = scene.shapes[0]
    assert f"{shape.color} {shape.kind}" in answer["embeds"][0]["description"]

    # A Lottie sticker with a mention: refused, and the page shows the sticker.
    posted = await api.call(
        "POST",
        "/api/messages",
        json={"channel_id": channel, "user_id": ada, "content": "@Palicord",
              "sticker_ids": [lottie["id"]]},
    )  # fmt: skip
    messages = await api.until(
        channel,
        lambda ms: any(m["reply_to"] == posted["id"] and "⚠️" in m["content"] for m in ms),
    )
    [mine] = [m for m in messages if m["id"] == posted["id"]]
    assert mine["stickers"] == [{**{k: lottie[k] for k in ("id", "name")}, "format_type": "3"}]
    [refusal] = [m for m in messages if m["reply_to"] == posted["id"]]
    assert "vector stickers" in refusal["content"]


async def test_other_sites_cannot_drive_the_sandbox(api: Api, sandbox: Sandbox) -> None:
    port = sandbox.server.port
    await api.call("GET", "/api/state")  # no Origin (curl, the client): served
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        page = {"Host": host, "Origin": f"http://{host}"}
        await api.call("GET", "/api/state", headers=page)
    state = await api.call("GET", "/api/state")
    body = {"channel_id": state["servers"][0]["channels"][0]["id"], "user_id": "1", "content": "x"}
    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Host": f"evil.example:{port}"},  # DNS rebinding: a site's name on 127.0.0.1
    ]
    for headers in refused:
        await api.call("POST", "/api/messages", json=body, headers=headers, status=403)
    # A form or a no-CORS fetch from another site can only send text/plain.
    plain = {"data": json.dumps(body), "headers": {"Content-Type": "text/plain"}}
    await api.call("POST", "/api/messages", status=415, **plain)


def test_each_sandbox_on_a_redis_has_its_own_keys() -> None:
    # A second sandbox runs on another port: its queue, stream and clean-up are its own.
    first, second = key_prefix(8080), key_prefix(8081)
    assert first != second and not first.startswith(second) and not second.startswith(first)
    QueueSettings(key_prefix=first)  # a valid prefix (with its hash tag)
