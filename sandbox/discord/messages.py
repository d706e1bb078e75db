"""Channel messages in the fake Discord: create, fetch, edit and delete (a delete is
dispatched as MESSAGE_DELETE, as Discord does), attachments kept on the CDN so that a
later message (a reply, a context menu) can point at them, with their alt text."""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable

from aiohttp import web

from sandbox.discord import payloads as p
from sandbox.discord.cdn import Cdn
from sandbox.discord.recorder import Recorded
from sandbox.discord.rest import RestRouter, error, json_response


class Messages:
    """Every message by id, whoever posted it."""

    def __init__(
        self,
        *,
        bot_user: p.FakeUser,
        guilds: list[p.FakeGuild],
        cdn: Cdn,
        dispatch: Callable[[str, p.Json], Awaitable[None]] | None = None,
    ) -> None:
        self._bot_user = bot_user
        self._guilds = guilds
        self._cdn = cdn
        self._dispatch = dispatch
        self.by_id: dict[int, p.Json] = {}
        self.deleted: list[int] = []  # ids, in the order they were deleted

    def route(self, router: RestRouter) -> None:
        router.add("POST", "/channels/{channel_id}/messages", self._create)
        router.add("GET", "/channels/{channel_id}/messages/{message_id}", self._get)
        router.add("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit)
        router.add("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete)

    def guild_of(self, channel_id: int) -> int | None:
        return next((g.id for g in self._guilds if g.has_channel(channel_id)), None)

    async def delete(self, message_id: int) -> bool:
        """Delete a message and tell the bot (MESSAGE_DELETE); False if there was none."""
        msg = self.by_id.pop(message_id, None)
        if msg is None:
            return False
        self.deleted.append(message_id)
        if self._dispatch is not None:
            event = {"id": msg["id"], "channel_id": msg["channel_id"]}
            if msg.get("guild_id"):
                event["guild_id"] = msg["guild_id"]
            await self._dispatch("MESSAGE_DELETE", event)
        return True

    def store(
        self,
        record: Recorded,
        *,
        channel_id: int,
        flags: int = 0,
        extra: p.Json | None = None,
        author: p.Json | None = None,
    ) -> p.Json:
        """Keep the message the bot sent in `record` (as `author`, by default the bot) and
        return it as Discord would."""
        body = record.payload  # an interaction callback nests the message under `data`
        referenced = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            referenced = self.by_id.get(int(ref["message_id"]))
        msg = p.message(
            p.snowflake(),
            channel_id=channel_id,
            guild_id=self.guild_of(channel_id),
            author=author or self._bot_user.payload(),
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            attachments=self._stored_files(record),
            referenced=referenced,
            flags=flags or int(body.get("flags") or 0),
            extra={"components": body.get("components") or [], **(extra or {})},
        )
        self.by_id[int(msg["id"])] = msg
        return msg

    def apply_edit(self, msg: p.Json, record: Recorded) -> p.Json:
        """Apply an edit as Discord does: listed attachments are kept, new files added."""
        body = record.payload  # an UPDATE_MESSAGE callback nests the edit under `data`
        cleared: p.Json = {"content": "", "embeds": [], "flags": 0, "components": []}
        for key, empty in cleared.items():
            if key in body:  # null clears a field, as on Discord
                msg[key] = body[key] if body[key] is not None else empty
        if "attachments" in body or record.files:
            kept_ids = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in msg.get("attachments", []) if a["id"] in kept_ids]
            msg["attachments"] = kept + self._stored_files(record)
        msg["edited_timestamp"] = p.now_iso()
        return msg

    def _stored_files(self, record: Recorded) -> list[p.Json]:
        # discord.py lists each new file in `attachments` by its index ("files[i]"), with
        # its alt text as `description`.
        body = record.payload
        described = {
            str(a.get("id")): a.get("description")
            for a in (body.get("attachments") or [])
            if isinstance(a, dict)
        }
        return [
            p.attachment(
                p.snowflake(),
                url=self._cdn.add(f.data, f.filename, f.content_type or ""),
                filename=f.filename,
                size=len(f.data),
                # Discord derives it from the name; discord.py uploads octet-stream.
                content_type=mimetypes.guess_type(f.filename)[0] or f.content_type,
                description=described.get(f.field.removeprefix("files[").rstrip("]")),
            )
            for f in record.files
        ]

    async def _create(self, request: web.Request, record: Recorded) -> web.Response:
        channel_id = int(record.params["channel_id"])
        body = record.payload
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # As Discord does for a few minutes: the same nonce again is the same message.
            for msg in self.by_id.values():
                if msg.get("nonce") == str(nonce) and msg["channel_id"] == str(channel_id):
                    return json_response(msg)
        extra = {"nonce": str(nonce)} if nonce is not None else None
        return json_response(self.store(record, channel_id=channel_id, extra=extra))

    async def _get(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self.by_id.get(int(record.params["message_id"]))
        return json_response(msg) if msg else error(404, 10008, "Unknown Message")

    async def _edit(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self.by_id.get(int(record.params["message_id"]))
        if msg is None:
            return error(404, 10008, "Unknown Message")
        return json_response(self.apply_edit(msg, record))

    async def _delete(self, request: web.Request, record: Recorded) -> web.Response:
        if not await self.delete(int(record.params["message_id"])):
            return error(404, 10008, "Unknown Message")
        return web.Response(status=204)
