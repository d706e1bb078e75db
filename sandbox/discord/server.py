"""A Discord-compatible server on loopback: REST, gateway and CDN, recording what the bot sends.

The real discord.py client talks to it through `Route.BASE` and
`DiscordWebSocket.DEFAULT_GATEWAY`; nothing of discord.py is patched beyond those two.
This module holds the identity, gateway and command-sync routes and wires the rest:
`messages` (channel messages), `webhooks` (interaction responses), `channel_webhooks`
(webhooks a bot makes in a channel), `cdn` (attachments).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable

from aiohttp import web

from sandbox.discord import interactions as ix
from sandbox.discord import payloads as p
from sandbox.discord.cdn import Cdn
from sandbox.discord.channel_webhooks import ChannelWebhooks
from sandbox.discord.gateway import Gateway
from sandbox.discord.messages import Messages
from sandbox.discord.recorder import Recorded, Recorder
from sandbox.discord.rest import API_PREFIX, Fault, RestRouter, json_response
from sandbox.discord.webhooks import InteractionResponses

MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class FakeDiscord:
    """One application, one bot user, a few guilds with a text channel each (#general, and
    `extra_channels` by name). With
    `shard_count`, that many shards are recommended (GET /gateway/bot) and guild i belongs
    to shard i % shard_count."""

    def __init__(
        self,
        *,
        guild_count: int = 2,
        extra_channels: tuple[str, ...] = (),
        shard_count: int = 1,
        guild_names: tuple[str, ...] = (),
        keep_records: int | None = None,
        cdn_max_bytes: int | None = None,
    ) -> None:
        self.token = "fake." + secrets.token_urlsafe(24)
        self.app_id = p.snowflake()
        self.bot_user = p.FakeUser(p.snowflake(), "Palicord", bot=True)
        self.shard_count = shard_count
        names = guild_names or tuple(f"guild-{i}" for i in range(guild_count))
        ids = [p.snowflake_on_shard(i % shard_count, shard_count) for i in range(len(names))]
        self.guilds = [
            p.FakeGuild(
                gid,
                name,
                [p.FakeChannel(p.snowflake(), gid, c) for c in ("general", *extra_channels)],
            )
            for name, gid in zip(names, ids, strict=True)
        ]
        self.recorder = Recorder(keep=keep_records)
        self.faults: list[Fault] = []  # connection cuts a test injects (sandbox.discord.rest)
        self._dms: dict[int, p.FakeChannel] = {}  # user id → their DM channel with the bot
        self.gateway = Gateway(
            token=self.token, ready_payload=self._ready, guild_payloads=self._guild_payloads
        )
        self.commands: dict[int | None, list[p.Json]] = {}  # guild id (None: global) → synced
        self.cdn = Cdn(self.recorder, lambda: self.base_url, max_bytes=cdn_max_bytes)
        self._messages = Messages(
            bot_user=self.bot_user, guilds=self.guilds, cdn=self.cdn, dispatch=self._dispatch
        )
        self.webhooks = ChannelWebhooks(
            bot_user=self.bot_user,
            guilds=self.guilds,
            messages=self._messages,
            dispatch=self._dispatch,
        )
        self._responses = InteractionResponses(
            app_id=self.app_id, messages=self._messages, channel_webhooks=self.webhooks
        )
        # Shared views for tests and actions: messages by id, interactions by token.
        self.messages = self._messages.by_id
        self.interactions = self._responses.by_token
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(
        self, *, port: int = 0, more_routes: Callable[[web.Application], None] | None = None
    ) -> None:
        """Listen on 127.0.0.1 only (`port` 0: any free one); `more_routes` adds routes of
        its own (the sandbox's page and API) to the same server."""
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        router = RestRouter(app, self.recorder, self.token, self.faults)
        router.add("GET", "/users/@me", self._me)
        router.add("GET", "/oauth2/applications/@me", self._application)
        router.add("GET", "/gateway", self._gateway_info)
        router.add("GET", "/gateway/bot", self._gateway_info)
        router.add("POST", "/channels/{channel_id}/typing", self._no_content)
        for scope in ("/applications/{app_id}", "/applications/{app_id}/guilds/{guild_id}"):
            router.add("GET", scope + "/commands", self._get_commands)
            router.add("PUT", scope + "/commands", self._put_commands)
        self._messages.route(router)
        self.webhooks.route(router)
        self._responses.route(router)
        self.cdn.route(app)
        app.router.add_get("/gateway", self.gateway.handle)
        if more_routes is not None:
            more_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _dispatch(self, event: str, data: p.Json) -> None:
        """An event for the bot, when it is connected (a test may post with no bot)."""
        with contextlib.suppress(RuntimeError):  # no shard of the bot is connected for it
            await self.gateway.dispatch(event, data)

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

    def add_cdn_file(self, data: bytes, filename: str, content_type: str) -> str:
        """Serve `data` from the fake CDN; returns its URL."""
        return self.cdn.add(data, filename, content_type)

    # --- identity and gateway ----------------------------------------------------------

    def _shard_guilds(self, shard: tuple[int, int]) -> list[p.FakeGuild]:
        return [g for g in self.guilds if p.shard_of(g.id, shard[1]) == shard[0]]

    def _ready(self, session_id: str, shard: tuple[int, int]) -> p.Json:
        return {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self._shard_guilds(shard)],
            "session_id": session_id,
            "shard": list(shard),
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": 0},
        }

    def _guild_payloads(self, shard: tuple[int, int]) -> list[p.Json]:
        return [g.payload(self.bot_user.payload()) for g in self._shard_guilds(shard)]

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
        return json_response(
            {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit}
        )

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
