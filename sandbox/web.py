"""The sandbox's page and its scripting API, served by the Discord-compatible server itself
(same port, 127.0.0.1 only). The page makes exactly these calls, so operators and tests
can drive the sandbox without a browser:

    GET  /api/state                       servers, channels, users, commands, bot status
    POST /api/attachments                 multipart `file` → an attachment, as Discord's
    POST /api/messages                    a user posts (mention with @Palicord or <@id>);
                                          links to its pictures get previews, as on Discord
    POST /api/interactions                a slash command, a context menu, a button press,
                                          or a modal submit
    POST /api/autocomplete                what the bot suggests for an option being typed
    GET  /api/channels/{id}/messages      the channel as it stands, oldest first

Who may call it, and how bodies and errors travel, is `sandbox.http`.

Every user action becomes what Discord would send the bot (a MESSAGE_CREATE or an
INTERACTION_CREATE on the gateway); every answer is whatever the bot sent back over REST.
Nothing here knows how Palicord works: the sandbox stands in for Discord, not for it.
"""

from __future__ import annotations

import contextlib
import io
import mimetypes
import re
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from sandbox.discord import DiscordServer, InteractionState
from sandbox.discord import interactions as ix
from sandbox.discord import payloads as p
from sandbox.http import ApiError, api, asset, json_body, page, same_origin_only
from sandbox.views import message_view, modal_view

CALLBACK_WAIT_S = 3.5  # Discord's 3 s to acknowledge, and a little slack
# A vector sticker, to see the bot refuse one (Lottie JSON, as Discord serves it).
LOTTIE_STICKER = b'{"v":"5.7.4","fr":30,"ip":0,"op":30,"w":160,"h":160,"layers":[]}'
_LINK_RE = re.compile(r"https?://[^\s<>]+")
MAX_KEPT_ATTACHMENTS = 500
_TYPE_CASTS: dict[int, Any] = {4: int, 5: bool, 10: float}  # integer, boolean, number


class Sandbox:
    """The users, uploads and sample pictures of one sandbox, and its HTTP handlers."""

    def __init__(
        self, server: DiscordServer, *, notice: str = "", samples: dict[str, bytes] | None = None
    ) -> None:
        self.server = server
        self.notice = notice  # e.g. "demo model: it only knows coloured shapes"
        self.samples = samples or {}
        self.users = [
            server.user("Ada", admin=True),
            server.user("Ben"),
            server.user("Chen", locale="de"),
        ]
        self.model_ready = True  # the sandbox clears it while the worker loads its model
        # Uploaded but perhaps not yet posted; bounded, oldest dropped first.
        self.attachments: OrderedDict[str, p.Json] = OrderedDict()
        # The first PNG sample doubles as a sticker and a custom emoji, beside a Lottie
        # sticker (which the bot cannot read): what a guild's picker would offer.
        first_png = next((d for n, d in self.samples.items() if n.endswith(".png")), None)
        self.stickers: list[p.Json] = []
        self.emojis: list[str] = []
        if first_png is not None:
            self.stickers.append(server.sticker(first_png, "shapes"))
            self.emojis.append(server.emoji(first_png, "shapes"))
        self.stickers.append(server.sticker(LOTTIE_STICKER, "wave (Lottie)", p.STICKER_LOTTIE))

    def routes(self, app: web.Application) -> None:
        app.middlewares.append(same_origin_only(lambda: self.server.port))
        app.router.add_get("/", page)
        app.router.add_get("/static/{name}", asset)
        app.router.add_get("/samples/{name}", self._sample)
        app.router.add_get("/api/state", api(self.state))
        app.router.add_post("/api/attachments", api(self.upload))
        app.router.add_post("/api/messages", api(self.post_message))
        app.router.add_post("/api/interactions", api(self.interact))
        app.router.add_post("/api/autocomplete", api(self.autocomplete))
        app.router.add_get("/api/channels/{channel_id}/messages", api(self.channel))

    # --- page ------------------------------------------------------------------------

    async def _sample(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        data = self.samples.get(name)
        if data is None:
            raise web.HTTPNotFound()
        content_type = mimetypes.guess_type(name)[0] or "image/png"
        return web.Response(body=data, content_type=content_type)

    # --- lookups -----------------------------------------------------------------------

    def _user(self, body: p.Json) -> p.FakeUser:
        for user in self.users:
            if str(user.id) == str(body.get("user_id")):
                return user
        raise ApiError(400, "unknown user_id (see GET /api/state)")

    def _guild(self, channel_id: object) -> p.FakeGuild:
        return self._place(channel_id)[0]

    def _place(self, channel_id: object) -> tuple[p.FakeGuild, p.FakeChannel]:
        for guild in self.server.guilds:
            for channel in guild.channels:
                if str(channel.id) == str(channel_id):
                    return guild, channel
        raise ApiError(404, "unknown channel_id (see GET /api/state)")

    def _require_bot(self) -> None:
        if not self.server.gateway.ready.is_set():
            raise ApiError(503, "the bot is not connected to the sandbox yet")

    # --- API ---------------------------------------------------------------------------

    async def state(self, request: web.Request) -> p.Json:
        commands = [c for cmds in self.server.commands.values() for c in cmds]
        return {
            "sandbox": True,
            "notice": self.notice,
            "bot": {
                "id": str(self.server.bot_user.id),
                "name": self.server.bot_user.name,
                "connected": self.server.gateway.ready.is_set(),
                "model_ready": self.model_ready,
            },
            "servers": [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "channels": [{"id": str(c.id), "name": c.name} for c in g.channels],
                }
                for g in self.server.guilds
            ],
            "users": [
                {"id": str(u.id), "name": u.name, "admin": u.permissions == p.ADMIN_PERMISSIONS}
                for u in self.users
            ],
            "commands": commands,
            "samples": [f"/samples/{name}" for name in self.samples],
            "stickers": [
                {**sticker, "url": self._sticker_url(sticker)} for sticker in self.stickers
            ],
            "emojis": self.emojis,
            "cdn_url": self.server.cdn.url,
        }

    def _sticker_url(self, sticker: p.Json) -> str | None:
        kind = sticker["format_type"]
        if kind == p.STICKER_LOTTIE:
            return None  # a browser cannot show it without a Lottie player either
        extension = "gif" if kind == p.STICKER_GIF else "png"
        return f"{self.server.cdn.url}/stickers/{sticker['id']}.{extension}"

    async def upload(self, request: web.Request) -> p.Json:
        try:
            form = await request.post()
        except ValueError:
            raise ApiError(400, "send multipart/form-data with a `file` field") from None
        file = form.get("file")
        if not isinstance(file, web.FileField):
            raise ApiError(400, "send multipart/form-data with a `file` field")
        data = file.file.read()
        filename = file.filename or "upload"
        content_type = file.content_type
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        width = height = None
        try:
            with Image.open(io.BytesIO(data)) as image:  # header only: no decode here
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError):
            pass  # not a picture (or a broken one): Discord sends no size either
        attachment = self.server.attachment(
            data, filename, content_type, width=width, height=height
        )
        self.attachments[attachment["id"]] = attachment
        while len(self.attachments) > MAX_KEPT_ATTACHMENTS:
            self.attachments.popitem(last=False)
        return attachment

    def _attachment(self, attachment_id: object) -> p.Json:
        found = self.attachments.get(str(attachment_id))
        if found is None:
            raise ApiError(400, f"unknown attachment id {attachment_id} (POST /api/attachments)")
        return found

    async def post_message(self, request: web.Request) -> p.Json:
        body = await json_body(request)
        self._require_bot()
        (guild, channel), user = self._place(body.get("channel_id")), self._user(body)
        content = str(body.get("content") or "")
        bot = self.server.bot_user
        mention = re.compile(rf"<@!?{bot.id}>|@{re.escape(bot.name)}\b", re.IGNORECASE)
        mentions_bot = bool(mention.search(content))
        content = re.sub(r"\s+", " ", mention.sub("", content)).strip()
        attachments = [self._attachment(i) for i in body.get("attachment_ids") or []]
        described = body.get("descriptions") or {}
        if not isinstance(described, dict):
            raise ApiError(400, "descriptions maps attachment ids to alt text")
        attachments = [_described(a, described.get(a["id"])) for a in attachments]
        by_id = {s["id"]: s for s in self.stickers}
        stickers = [by_id.get(str(i)) for i in body.get("sticker_ids") or []]
        if None in stickers:
            raise ApiError(400, "unknown sticker id (see /api/state)")
        reply_to = None
        if body.get("reply_to"):
            reply_to = self.server.messages.get(int(body["reply_to"]))
            if reply_to is None:
                raise ApiError(400, "reply_to names no message")
        if not content and not attachments and not stickers:
            raise ApiError(400, "a message needs text, an attachment or a sticker")
        msg = await self.server.post_message(
            user,
            content,
            attachments=attachments,
            mention_bot=mentions_bot,
            reply_to=reply_to,
            guild=guild,
            stickers=[s for s in stickers if s is not None],
            channel=channel,
        )
        # Discord previews links; the sandbox can only reach its own pictures.
        found = [(link, self._own_picture(link)) for link in _LINK_RE.findall(content)]
        previews = [self.server.link_preview(link, *got) for link, got in found if got]
        if previews:
            self.server.add_previews_later(msg, previews)
        return msg

    def _own_picture(self, link: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of a sample or CDN file `link` points to, if it does."""
        parts = urlsplit(link)
        if parts.netloc.lower() not in {
            f"{h}:{self.server.port}" for h in ("127.0.0.1", "localhost")
        }:
            return None
        path = unquote(parts.path)
        name = path.removeprefix("/samples/")
        if name in self.samples:
            return self.samples[name], mimetypes.guess_type(name)[0] or "image/png"
        return self.server.cdn.files.get(path.removeprefix("/cdn/"))

    def _options(self, command: p.Json, given: object) -> tuple[p.Json, dict[str, p.Json]]:
        if not isinstance(given, dict):
            raise ApiError(400, "options must be an object: option name → value")
        declared = {o["name"]: o for o in command.get("options", [])}
        options: p.Json = {}
        attachments: dict[str, p.Json] = {}
        for name, value in given.items():
            if name not in declared:
                raise ApiError(400, f"/{command['name']} has no option {name!r}")
            kind = declared[name]["type"]
            if kind == ix.OPTION_ATTACHMENT:
                attachments[name] = self._attachment(value)
            elif value not in (None, ""):
                try:
                    options[name] = _TYPE_CASTS.get(kind, str)(value)
                except ValueError:
                    raise ApiError(400, f"option {name!r} has the wrong type") from None
        missing = [
            o["name"]
            for o in declared.values()
            if o.get("required") and o["name"] not in options and o["name"] not in attachments
        ]
        if missing:
            raise ApiError(400, f"/{command['name']} needs {', '.join(missing)}")
        return options, attachments

    def _command(self, name: object, kind: int) -> p.Json:
        try:
            return self.server.command(str(name), kind=kind)
        except AssertionError:
            raise ApiError(400, f"the bot has no command named {name!r}") from None

    async def interact(self, request: web.Request) -> p.Json:
        body = await json_body(request)
        self._require_bot()
        user = self._user(body)
        if isinstance(body.get("modal"), dict):
            state = await self._submit_modal(user, body["modal"])
        elif body.get("custom_id"):  # a button on a message
            guild = self._guild(body.get("channel_id"))
            message = self.server.messages.get(int(body.get("message_id") or 0))
            if message is None:
                raise ApiError(400, "message_id names no message")
            try:
                state = await self.server.press(
                    message, str(body["custom_id"]), user=user, guild=guild
                )
            except AssertionError as exc:
                raise ApiError(400, str(exc)) from None
        else:
            guild, channel = self._place(body.get("channel_id"))
            target_id = body.get("target_message_id")
            if target_id:
                target = self.server.messages.get(int(target_id))
                if target is None:
                    raise ApiError(400, "target_message_id names no message")
                self._command(body.get("command"), ix.MESSAGE_COMMAND)
                state = await self.server.message_command(
                    str(body["command"]), target, user=user, guild=guild
                )
            else:
                command = self._command(body.get("command"), ix.CHAT_INPUT)
                options, files = self._options(command, body.get("options") or {})
                state = await self.server.slash(
                    command["name"],
                    user=user,
                    guild=guild,
                    channel=channel,
                    attachments=files,
                    **options,
                )
        return await self._outcome(state)

    async def _submit_modal(self, user: p.FakeUser, modal: p.Json) -> InteractionState:
        opened = [
            s
            for s in self.server.interactions.values()
            if s.modal is not None
            and s.modal.get("custom_id") == modal.get("custom_id")
            and s.user.id == user.id
        ]
        if not opened:
            raise ApiError(400, "no modal with that custom_id is open for this user")
        parent = max(opened, key=lambda s: s.id)
        values = modal.get("values") or {}
        if not isinstance(values, dict):
            raise ApiError(400, "modal values must be an object: field → text")
        return await self.server.submit_modal(parent, {str(k): str(v) for k, v in values.items()})

    async def _outcome(self, state: InteractionState) -> p.Json:
        """The interaction, once the bot acknowledged it (or did not, within Discord's 3 s)."""
        # Not acknowledged in time: Discord would show "The application did not respond".
        with contextlib.suppress(AssertionError):
            await self.server.wait_for_callback(state, timeout_s=CALLBACK_WAIT_S)
        callback = state.callback or {}
        return {
            "id": str(state.id),
            "acknowledged": state.acknowledged,
            "response_type": callback.get("type"),
            "message_id": state.original["id"] if state.original else None,
            "modal": modal_view(state.modal) if state.modal else None,
        }

    async def autocomplete(self, request: web.Request) -> p.Json:
        body = await json_body(request)
        self._require_bot()
        user, guild = self._user(body), self._guild(body.get("channel_id"))
        command = self._command(body.get("command"), ix.CHAT_INPUT)
        given = body.get("options") or {}
        if not isinstance(given, dict):
            raise ApiError(400, "options must be an object: option name → value")
        text_options = {
            k: v
            for k, v in given.items()
            if any(o["name"] == k and o["type"] == 3 for o in command.get("options", []))
        }
        focused = str(body.get("focused") or "")
        text_options.setdefault(focused, "")
        try:
            choices = await self.server.autocomplete(
                command["name"], focused, user=user, guild=guild, **text_options
            )
        except AssertionError as exc:
            raise ApiError(400, str(exc).splitlines()[0]) from None
        return {"choices": choices}

    async def channel(self, request: web.Request) -> list[p.Json]:
        channel_id = request.match_info["channel_id"]
        self._guild(channel_id)
        found = [m for m in self.server.messages.values() if m["channel_id"] == channel_id]
        return [message_view(m) for m in sorted(found, key=lambda m: int(m["id"]))]


def _described(attachment: p.Json, alt: object) -> p.Json:
    """The attachment with its alt text (Discord's `description`, at most 1,024 chars)."""
    if not isinstance(alt, str) or not alt.strip():
        return attachment
    return {**attachment, "description": alt.strip()[:1024]}
