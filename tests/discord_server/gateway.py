"""The fake gateway: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME, dispatches.

discord.py asks for `?v=10&encoding=json&compress=zlib-stream` (or zstd-stream) and sends
`"compress": true` in IDENTIFY; both only mean it *can* inflate. It parses text frames as
plain JSON, so this gateway answers in text frames and never compresses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.discord_server.payloads import Json

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
CLOSE_AUTHENTICATION_FAILED = 4004

# Opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    7,
    9,
    10,
    11,
)


class Gateway:
    """One bot connection at a time (the bot is not sharded)."""

    def __init__(
        self,
        *,
        token: str,
        ready_payload: Callable[[str], Json],
        guild_payloads: Callable[[], list[Json]],
    ) -> None:
        self._token = token
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self.session_id: str | None = None
        self.identify: Json | None = None
        self.connects = 0
        self.resumes = 0
        self.query: dict[str, str] = {}
        self.ready = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.query = dict(request.query)
        self.connects += 1
        self.ready.clear()
        self._ws = ws
        await self._send({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            await self._on_frame(ws, json.loads(msg.data))
        if self._ws is ws:
            self._ws = None
            self.ready.clear()
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, frame: Json) -> None:
        op = frame.get("op")
        data = frame.get("d") or {}
        if op == HEARTBEAT:
            await self._send({"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            if data.get("token") != self._token:
                await ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
                return
            self.identify = data
            self._seq = 0
            self.session_id = secrets.token_hex(16)
            await self.dispatch("READY", self._ready_payload(self.session_id))
            for guild in self._guild_payloads():
                await self.dispatch("GUILD_CREATE", guild)
            self.ready.set()
        elif op == RESUME:
            if data.get("session_id") != self.session_id or data.get("token") != self._token:
                await self._send({"op": INVALID_SESSION, "d": False})
                return
            self.resumes += 1
            await self.dispatch("RESUMED", {})
            self.ready.set()
        else:
            log.debug("fake gateway ignores op %s", op)

    async def _send(self, frame: Json) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            raise RuntimeError("the bot is not connected to the fake gateway")
        async with self._send_lock:
            await ws.send_str(json.dumps(frame))

    async def dispatch(self, event: str, data: Any) -> None:
        """Send one DISPATCH frame with the next sequence number."""
        self._seq += 1
        await self._send({"op": DISPATCH, "t": event, "s": self._seq, "d": data})

    async def request_reconnect(self) -> None:
        """Ask the bot to reconnect and RESUME, as Discord does during maintenance."""
        self.ready.clear()
        await self._send({"op": RECONNECT, "d": None})

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
