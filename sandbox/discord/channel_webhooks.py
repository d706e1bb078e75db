"""Channel webhooks in the fake Discord: created and listed by a bot with Manage Webhooks,
executed with their token under any name and avatar (`username`, `avatar_url`), files
with their alt text; each message is dispatched as MESSAGE_CREATE, as Discord does."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from sandbox.discord import payloads as p
from sandbox.discord.messages import Messages
from sandbox.discord.recorder import Recorded
from sandbox.discord.rest import RestRouter, error, json_response

MISSING_PERMISSIONS = 50013


@dataclass
class FakeWebhook:
    id: int
    token: str
    channel_id: int
    guild_id: int
    name: str
    creator: p.Json

    def payload(self) -> p.Json:
        return {
            "id": str(self.id),
            "type": 1,
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "name": self.name,
            "avatar": None,
            "token": self.token,
            "application_id": None,
            "user": self.creator,
        }


class ChannelWebhooks:
    """Every channel webhook, by id; the messages each one posted are in `Messages`."""

    def __init__(
        self,
        *,
        bot_user: p.FakeUser,
        guilds: list[p.FakeGuild],
        messages: Messages,
        dispatch: Callable[[str, p.Json], Awaitable[None]],
    ) -> None:
        self._bot_user = bot_user
        self._guilds = guilds
        self._messages = messages
        self._dispatch = dispatch
        self.by_id: dict[int, FakeWebhook] = {}

    def route(self, router: RestRouter) -> None:
        router.add("GET", "/channels/{channel_id}/webhooks", self._list)
        router.add("POST", "/channels/{channel_id}/webhooks", self._create)
        # POST /webhooks/{id}/{token} is shared with interaction follow-ups: the
        # interaction responses hand over what is not theirs (`execute`).

    def owns(self, webhook_id: str) -> bool:
        return webhook_id.isdigit() and int(webhook_id) in self.by_id

    def _guild(self, channel_id: int) -> p.FakeGuild | None:
        return next((g for g in self._guilds if g.has_channel(channel_id)), None)

    def _allowed(self, record: Recorded) -> p.FakeGuild | web.Response:
        guild = self._guild(int(record.params["channel_id"]))
        if guild is None:
            return error(404, 10003, "Unknown Channel")
        if not guild.bot_permissions & p.MANAGE_WEBHOOKS:
            return error(403, MISSING_PERMISSIONS, "Missing Permissions")
        return guild

    async def _list(self, request: web.Request, record: Recorded) -> web.Response:
        guild = self._allowed(record)
        if isinstance(guild, web.Response):
            return guild
        channel_id = int(record.params["channel_id"])
        hooks = [h.payload() for h in self.by_id.values() if h.channel_id == channel_id]
        return json_response(hooks)

    async def _create(self, request: web.Request, record: Recorded) -> web.Response:
        guild = self._allowed(record)
        if isinstance(guild, web.Response):
            return guild
        body = record.json if isinstance(record.json, dict) else {}
        hook = FakeWebhook(
            id=p.snowflake(),
            token=secrets.token_urlsafe(32),
            channel_id=int(record.params["channel_id"]),
            guild_id=guild.id,
            name=str(body.get("name") or "Captain Hook"),
            creator=self._bot_user.payload(),
        )
        self.by_id[hook.id] = hook
        return json_response(hook.payload())

    async def execute(self, request: web.Request, record: Recorded) -> web.Response:
        """POST /webhooks/{id}/{token}: a message in the webhook's channel, as whoever
        the body names."""
        hook = self.by_id.get(int(record.params["app_id"]))
        if hook is None or not secrets.compare_digest(hook.token, record.params["token"]):
            return error(404, 10015, "Unknown Webhook")
        body = record.payload
        author = {
            **p.user(hook.id, str(body.get("username") or hook.name), bot=True),
            "discriminator": "0000",
            # Not Discord's shape (it keeps an avatar hash): the sandbox page shows it.
            "avatar_url": body.get("avatar_url"),
        }
        msg = self._messages.store(
            record, channel_id=hook.channel_id, author=author, extra={"webhook_id": str(hook.id)}
        )
        await self._dispatch("MESSAGE_CREATE", msg)
        if record.query.get("wait") in ("true", "1", "True"):
            return json_response(msg)
        return web.Response(status=204)
