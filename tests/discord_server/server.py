"""A Discord-compatible server on loopback: REST, gateway and CDN, recording what the bot sends.

The real discord.py client talks to it through `Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY`; nothing of discord.py is patched beyond those two.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import BodyPartReader, web

from tests.discord_server import interactions as ix
from tests.discord_server import payloads as p
from tests.discord_server.gateway import Gateway
from tests.discord_server.recorder import Recorded, Recorder, SentFile

API_PREFIX = "/api/v10"
ACK_DEADLINE_S = 3.0
EPHEMERAL = 64

Handler = Callable[[web.Request, Recorded], Awaitable[web.Response]]


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses bodies whose content-type is exactly "application/json".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status=status)


class FakeDiscord:
    """One application, one bot user, a few guilds with one text channel each."""

    def __init__(self, *, guild_count: int = 2) -> None:
        self.token = "fake." + secrets.token_urlsafe(24)
        self.app_id = p.snowflake()
        self.bot_user = p.FakeUser(p.snowflake(), "Palicord", bot=True)
        self.guilds = [
            p.FakeGuild(gid, f"guild-{i}", [p.FakeChannel(p.snowflake(), gid, "general")])
            for i, gid in enumerate(p.snowflake() for _ in range(guild_count))
        ]
        self.recorder = Recorder()
        self.gateway = Gateway(
            token=self.token, ready_payload=self._ready, guild_payloads=self._guild_payloads
        )
        self.commands: dict[int | None, list[p.Json]] = {}  # guild id (None: global) → synced
        self.messages: dict[int, p.Json] = {}
        self.interactions: dict[str, ix.InteractionState] = {}
        self.cdn_files: dict[str, tuple[bytes, str]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self._routes(app)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/cdn/{name:.+}", self._cdn)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def guild(self) -> p.FakeGuild:
        return self.guilds[0]

    # --- routing and recording ---------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        add = self._add
        add(app, "GET", "/users/@me", self._me)
        add(app, "GET", "/oauth2/applications/@me", self._application)
        add(app, "GET", "/gateway", self._gateway_info)
        add(app, "GET", "/gateway/bot", self._gateway_info)
        add(app, "GET", "/applications/{app_id}/commands", self._get_commands)
        add(app, "PUT", "/applications/{app_id}/commands", self._put_commands)
        add(app, "GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands)
        add(app, "PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands)
        add(app, "POST", "/channels/{channel_id}/messages", self._create_message)
        add(app, "GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        add(app, "PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit_message)
        add(app, "POST", "/channels/{channel_id}/typing", self._no_content)
        add(app, "POST", "/interactions/{interaction_id}/{token}/callback", self._callback)
        add(app, "POST", "/webhooks/{app_id}/{token}", self._followup)
        add(app, "GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_webhook_msg)
        add(
            app, "PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._edit_webhook_msg
        )
        add(app, "DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._delete_webhook)

    def _add(self, app: web.Application, method: str, route: str, handler: Handler) -> None:
        needs_auth = not route.startswith(("/interactions/", "/webhooks/"))

        async def wrapped(request: web.Request) -> web.Response:
            record = await self._parse(request, route)
            try:
                if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
                    response = error(401, 0, "401: Unauthorized")
                else:
                    response = await handler(request, record)
                record.status = response.status
                body = response.body
                if isinstance(body, bytes) and response.content_type == "application/json":
                    record.response = json.loads(body)
            finally:
                # Recorded once answered, so a waiting test sees the response too.
                await self.recorder.add(record)
            return response

        app.router.add_route(method, API_PREFIX + route, wrapped)

    async def _parse(self, request: web.Request, route: str) -> Recorded:
        body: Any = None
        files: list[SentFile] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader)
                data = await part.read()
                if part.name == "payload_json":
                    body = json.loads(data)
                else:
                    files.append(
                        SentFile(
                            field=part.name or "",
                            filename=part.filename or "",
                            content_type=part.headers.get("Content-Type"),
                            data=bytes(data),
                        )
                    )
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        return Recorded(
            seq=-1,
            method=request.method,
            route=route,
            params=dict(request.match_info),
            query=dict(request.query),
            json=body,
            files=tuple(files),
        )

    # --- identity and gateway ----------------------------------------------------------

    def _ready(self, session_id: str) -> p.Json:
        return {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
            "session_id": session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }

    def _guild_payloads(self) -> list[p.Json]:
        return [g.payload(self.bot_user.payload()) for g in self.guilds]

    async def _me(self, request: web.Request, record: Recorded) -> web.Response:
        return json_response({**self.bot_user.payload(), "verified": True, "mfa_enabled": False})

    async def _application(self, request: web.Request, record: Recorded) -> web.Response:
        owner = p.user(p.snowflake(), "owner")
        return json_response(
            {
                "id": str(self.app_id),
                "name": "Palicord",
                "icon": None,
                "description": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "00" * 32,
                "flags": 0,
                "team": None,
            }
        )

    async def _gateway_info(self, request: web.Request, record: Recorded) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _no_content(self, request: web.Request, record: Recorded) -> web.Response:
        return web.Response(status=204)

    # --- application commands ----------------------------------------------------------

    def _scope(self, record: Recorded) -> int | None:
        gid = record.params.get("guild_id")
        return int(gid) if gid else None

    async def _get_commands(self, request: web.Request, record: Recorded) -> web.Response:
        return json_response(self.commands.get(self._scope(record), []))

    async def _put_commands(self, request: web.Request, record: Recorded) -> web.Response:
        scope = self._scope(record)
        synced = []
        for cmd in record.json or []:
            out = {**cmd, "id": str(p.snowflake()), "application_id": str(self.app_id)}
            out["version"] = str(p.snowflake())
            out.setdefault("type", ix.CHAT_INPUT)
            out.setdefault("description", "")  # Discord returns "" for context menus
            out.setdefault("default_member_permissions", None)
            out.setdefault("nsfw", False)
            if scope is not None:
                out["guild_id"] = str(scope)
            synced.append(out)
        self.commands[scope] = synced
        return json_response(synced)

    def command(self, name: str, *, kind: int = ix.CHAT_INPUT) -> p.Json:
        """The synced command by name (guild scope first, as Discord shows it)."""
        for scope in sorted(self.commands, key=lambda s: s is None):
            for cmd in self.commands[scope]:
                if cmd["name"] == name and cmd.get("type", ix.CHAT_INPUT) == kind:
                    return cmd
        raise AssertionError(f"the bot has not synced a command named {name!r}")

    # --- messages ----------------------------------------------------------------------

    def _store_message(
        self, record: Recorded, *, channel_id: int, flags: int = 0, extra: p.Json | None = None
    ) -> p.Json:
        body = record.json if isinstance(record.json, dict) else {}
        referenced = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            referenced = self.messages.get(int(ref["message_id"]))
        guild_id = next((g.id for g in self.guilds if g.channel.id == channel_id), None)
        msg = p.message(
            p.snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self.bot_user.payload(),
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            attachments=self._stored_files(record),
            referenced=referenced,
            flags=flags or int(body.get("flags") or 0),
            extra=extra,
        )
        self.messages[int(msg["id"])] = msg
        return msg

    def _stored_files(self, record: Recorded) -> list[p.Json]:
        out = []
        for f in record.files:
            url = self.add_cdn_file(f.data, f.filename, f.content_type or "")
            out.append(
                p.attachment(
                    p.snowflake(),
                    url=url,
                    filename=f.filename,
                    size=len(f.data),
                    content_type=f.content_type,
                )
            )
        return out

    async def _create_message(self, request: web.Request, record: Recorded) -> web.Response:
        channel_id = int(record.params["channel_id"])
        return json_response(self._store_message(record, channel_id=channel_id))

    async def _get_message(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self.messages.get(int(record.params["message_id"]))
        if msg is None:
            return error(404, 10008, "Unknown Message")
        return json_response(msg)

    def _apply_edit(self, msg: p.Json, record: Recorded) -> p.Json:
        body = record.json if isinstance(record.json, dict) else {}
        for key in ("content", "embeds", "flags", "components"):
            if key in body:
                msg[key] = body[key] if body[key] is not None else msg.get(key)
        if "attachments" in body or record.files:
            kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in msg.get("attachments", []) if a["id"] in kept_ids]
            msg["attachments"] = kept + self._stored_files(record)
        msg["edited_timestamp"] = p.now_iso()
        return msg

    async def _edit_message(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self.messages.get(int(record.params["message_id"]))
        if msg is None:
            return error(404, 10008, "Unknown Message")
        return json_response(self._apply_edit(msg, record))

    # --- interactions and their webhooks -----------------------------------------------

    async def _callback(self, request: web.Request, record: Recorded) -> web.Response:
        state = self.interactions.get(record.params["token"])
        if state is None or str(state.id) != record.params["interaction_id"]:
            return error(404, 10062, "Unknown interaction")
        if time.monotonic() - state.dispatched_at > ACK_DEADLINE_S:
            return error(404, 10062, "Unknown interaction")
        if state.acknowledged:
            return error(400, 40060, "Interaction has already been acknowledged.")
        body = record.json or {}
        state.callback, state.callback_at = body, time.monotonic()
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        resource: p.Json = {"type": kind}
        if kind == 9:  # MODAL
            state.modal = data
        elif kind in (4, 5):  # CHANNEL_MESSAGE / DEFERRED_CHANNEL_MESSAGE
            loading = {"flags": int(data.get("flags") or 0) | (128 if kind == 5 else 0)}
            state.original = self._store_message(
                record,
                channel_id=state.channel.id,
                flags=loading["flags"],
                extra={
                    "interaction_metadata": {
                        "id": str(state.id),
                        "type": 2,
                        "user": state.user.payload(),
                        "authorizing_integration_owners": {"0": str(state.guild.id)},
                    }
                },
            )
            resource["message"] = state.original
        summary = {
            "id": str(state.id),
            "type": 2,
            "response_message_id": state.original["id"] if state.original else None,
            "response_message_loading": kind == 5,
            "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
        }
        return json_response({"interaction": summary, "resource": resource})

    def _webhook_state(self, record: Recorded) -> ix.InteractionState | web.Response:
        state = self.interactions.get(record.params["token"])
        if record.params["app_id"] != str(self.app_id) or state is None:
            return error(404, 10015, "Unknown Webhook")
        if state.expired:
            return error(401, 50027, "Invalid Webhook Token")
        return state

    async def _followup(self, request: web.Request, record: Recorded) -> web.Response:
        state = self._webhook_state(record)
        if isinstance(state, web.Response):
            return state
        if not state.acknowledged:
            return error(404, 10015, "Unknown Webhook")
        msg = self._store_message(record, channel_id=state.channel.id)
        state.followups.append(msg)
        return json_response(msg)

    def _webhook_message(self, state: ix.InteractionState, message_id: str) -> p.Json | None:
        if message_id == "@original" or (state.original and state.original["id"] == message_id):
            return state.original
        return next((m for m in state.followups if m["id"] == message_id), None)

    async def _get_webhook_msg(self, request: web.Request, record: Recorded) -> web.Response:
        state = self._webhook_state(record)
        if isinstance(state, web.Response):
            return state
        msg = self._webhook_message(state, record.params["message_id"])
        return json_response(msg) if msg else error(404, 10008, "Unknown Message")

    async def _edit_webhook_msg(self, request: web.Request, record: Recorded) -> web.Response:
        state = self._webhook_state(record)
        if isinstance(state, web.Response):
            return state
        msg = self._webhook_message(state, record.params["message_id"])
        if msg is None:
            return error(404, 10008, "Unknown Message")
        msg["flags"] = int(msg.get("flags") or 0) & ~128  # no longer "thinking…"
        return json_response(self._apply_edit(msg, record))

    async def _delete_webhook(self, request: web.Request, record: Recorded) -> web.Response:
        state = self._webhook_state(record)
        if isinstance(state, web.Response):
            return state
        return web.Response(status=204)

    # --- CDN ---------------------------------------------------------------------------

    def add_cdn_file(self, data: bytes, filename: str, content_type: str) -> str:
        name = f"attachments/{p.snowflake()}/{filename}"
        self.cdn_files[name] = (data, content_type)
        return f"{self.base_url}/cdn/{name}"

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        record = Recorded(
            seq=-1,
            method="GET",
            route="/cdn",
            params={"name": name},
            query=dict(request.query),
            json=None,
            files=(),
        )
        await self.recorder.add(record)
        if name not in self.cdn_files:
            return web.Response(status=404)
        data, content_type = self.cdn_files[name]
        return web.Response(body=data, content_type=content_type or "application/octet-stream")
