"""Channel messages in the fake Discord: create, fetch and edit, attachments kept on the
CDN so that a later message (a reply, a context menu) can point at them."""

from __future__ import annotations

import mimetypes

from aiohttp import web

from sandbox.discord import payloads as p
from sandbox.discord.cdn import Cdn
from sandbox.discord.recorder import Recorded
from sandbox.discord.rest import RestRouter, error, json_response


class Messages:
    """Every message by id, whoever posted it."""

    def __init__(self, *, bot_user: p.FakeUser, guilds: list[p.FakeGuild], cdn: Cdn) -> None:
        self._bot_user = bot_user
        self._guilds = guilds
        self._cdn = cdn
        self.by_id: dict[int, p.Json] = {}

    def route(self, router: RestRouter) -> None:
        router.add("POST", "/channels/{channel_id}/messages", self._create)
        router.add("GET", "/channels/{channel_id}/messages/{message_id}", self._get)
        router.add("PATCH", "/channels/{channel_id}/messages/{message_id}", self._edit)

    def store(
        self, record: Recorded, *, channel_id: int, flags: int = 0, extra: p.Json | None = None
    ) -> p.Json:
        """Keep the message the bot sent in `record` and return it as Discord would."""
        body = record.payload  # an interaction callback nests the message under `data`
        referenced = None
        ref = body.get("message_reference")
        if ref and ref.get("message_id"):
            referenced = self.by_id.get(int(ref["message_id"]))
        guild_id = next((g.id for g in self._guilds if g.channel.id == channel_id), None)
        msg = p.message(
            p.snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self._bot_user.payload(),
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
        return [
            p.attachment(
                p.snowflake(),
                url=self._cdn.add(f.data, f.filename, f.content_type or ""),
                filename=f.filename,
                size=len(f.data),
                # Discord derives it from the name; discord.py uploads octet-stream.
                content_type=mimetypes.guess_type(f.filename)[0] or f.content_type,
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
