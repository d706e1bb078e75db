"""Interaction responses in the fake Discord: the callback (within 3 s, only once) and the
webhook follow-ups and edits that use the interaction's token (until it expires)."""

from __future__ import annotations

import time

from aiohttp import web

from sandbox.discord import interactions as ix
from sandbox.discord import payloads as p
from sandbox.discord.channel_webhooks import ChannelWebhooks
from sandbox.discord.messages import Messages
from sandbox.discord.recorder import Recorded
from sandbox.discord.rest import RestRouter, error, json_response

ACK_DEADLINE_S = 3.0
EPHEMERAL = 64
LOADING = 128  # "is thinking…"
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, UPDATE_MESSAGE, MODAL = 4, 5, 7, 9


class InteractionResponses:
    """What the bot did with each interaction token, by token."""

    def __init__(
        self, *, app_id: int, messages: Messages, channel_webhooks: ChannelWebhooks
    ) -> None:
        self._app_id = app_id
        self._messages = messages
        self._channel_webhooks = channel_webhooks  # they share POST /webhooks/{id}/{token}
        self.by_token: dict[str, ix.InteractionState] = {}

    def route(self, router: RestRouter) -> None:
        router.add("POST", "/interactions/{interaction_id}/{token}/callback", self._callback)
        router.add("POST", "/webhooks/{app_id}/{token}", self._followup)
        message = "/webhooks/{app_id}/{token}/messages/{message_id}"
        router.add("GET", message, self._get)
        router.add("PATCH", message, self._edit)
        router.add("DELETE", message, self._delete)

    async def _callback(self, request: web.Request, record: Recorded) -> web.Response:
        state = self.by_token.get(record.params["token"])
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
        if kind == MODAL:
            state.modal = data
        elif kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            flags = int(data.get("flags") or 0) | (
                LOADING if kind == DEFERRED_CHANNEL_MESSAGE else 0
            )
            state.original = self._messages.store(
                record, channel_id=state.channel.id, flags=flags, extra=_metadata(state)
            )
            resource["message"] = state.original
        elif kind == UPDATE_MESSAGE and state.message is not None:
            # A button press answered by editing the message the button is on.
            pressed_on = self._messages.by_id.get(int(state.message["id"]))
            if pressed_on is not None:
                resource["message"] = self._messages.apply_edit(pressed_on, record)
        summary = {
            "id": str(state.id),
            "type": ix.APPLICATION_COMMAND,
            "response_message_id": state.original["id"] if state.original else None,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(int(data.get("flags") or 0) & EPHEMERAL),
        }
        return json_response({"interaction": summary, "resource": resource})

    def _state(self, record: Recorded) -> ix.InteractionState | web.Response:
        state = self.by_token.get(record.params["token"])
        if record.params["app_id"] != str(self._app_id) or state is None:
            return error(404, 10015, "Unknown Webhook")
        if state.expired:
            return error(401, 50027, "Invalid Webhook Token")
        return state

    def _message(self, state: ix.InteractionState, message_id: str) -> p.Json | None:
        if message_id == "@original" or (state.original and state.original["id"] == message_id):
            return state.original
        return next((m for m in state.followups if m["id"] == message_id), None)

    async def _followup(self, request: web.Request, record: Recorded) -> web.Response:
        if self._channel_webhooks.owns(record.params["app_id"]):
            return await self._channel_webhooks.execute(request, record)
        state = self._state(record)
        if isinstance(state, web.Response):
            return state
        if not state.acknowledged:
            return error(404, 10015, "Unknown Webhook")
        msg = self._messages.store(record, channel_id=state.channel.id, extra=_metadata(state))
        state.followups.append(msg)
        return json_response(msg)

    def _found(self, record: Recorded) -> p.Json | web.Response:
        """The interaction message `record` names, or the error Discord would answer."""
        state = self._state(record)
        if isinstance(state, web.Response):
            return state
        msg = self._message(state, record.params["message_id"])
        return error(404, 10008, "Unknown Message") if msg is None else msg

    async def _get(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self._found(record)
        return msg if isinstance(msg, web.Response) else json_response(msg)

    async def _edit(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self._found(record)
        if isinstance(msg, web.Response):
            return msg
        msg["flags"] = int(msg.get("flags") or 0) & ~LOADING
        return json_response(self._messages.apply_edit(msg, record))

    async def _delete(self, request: web.Request, record: Recorded) -> web.Response:
        msg = self._found(record)
        if isinstance(msg, web.Response):
            return msg
        self._messages.by_id.pop(int(msg["id"]), None)
        return web.Response(status=204)


def _metadata(state: ix.InteractionState) -> p.Json:
    """What Discord attaches to an interaction's messages: whose command they answer (and
    so, for an ephemeral one, the only user who sees it)."""
    return {
        "interaction_metadata": {
            "id": str(state.id),
            "type": ix.APPLICATION_COMMAND,
            "user": state.user.payload(),
            "authorizing_integration_owners": (
                {"1": str(state.user.id)} if state.guild is None else {"0": str(state.guild.id)}
            ),
        },
        # Deprecated by Discord but still sent; the only place that names the command.
        "interaction": {
            "id": str(state.id),
            "type": ix.APPLICATION_COMMAND,
            "name": state.command,
            "user": state.user.payload(),
        },
    }
