"""The fake gateway: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME, dispatches,
with as many shard sessions as the bot opens.

Sharding works as on Discord: IDENTIFY carries `shard: [id, count]`, a shard's READY and
GUILD_CREATEs list only its guilds (`(guild_id >> 22) % count`), and each event goes to
the session of the shard that owns its guild (direct messages to shard 0). A bot run as
one process per shard range holds one session per shard it runs.

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
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from sandbox.discord.payloads import Json, shard_of

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_INVALID_SHARD = 4010
CLOSE_DISALLOWED_INTENTS = 4014
MESSAGE_CONTENT_INTENT = 1 << 15

# Opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    9,
    10,
    11,
)


@dataclass
class Session:
    """One shard's connection: its own session id and sequence numbers."""

    ws: web.WebSocketResponse
    shard: tuple[int, int] = (0, 1)  # (id, count)
    session_id: str | None = None
    seq: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def owns(self, guild_id: int | None) -> bool:
        shard_id, count = self.shard
        return shard_id == (0 if guild_id is None else shard_of(guild_id, count))


class Gateway:
    """Every shard session the bot (or its shard processes) opened."""

    def __init__(
        self,
        *,
        token: str,
        ready_payload: Callable[[str, tuple[int, int]], Json],
        guild_payloads: Callable[[tuple[int, int]], list[Json]],
    ) -> None:
        self._token = token
        self._ready_payload = ready_payload
        self._guild_payloads = guild_payloads
        self._sessions: list[Session] = []  # connected, READY or not
        self._resumable: dict[str, Session] = {}  # session id → its last session
        self.identify: Json | None = None  # the last IDENTIFY
        self.connects = 0
        self.resumes = 0
        self.query: dict[str, str] = {}
        # Set while every shard of the announced count has a READY (or RESUMED) session.
        self.ready = asyncio.Event()
        self._ready_shards: set[tuple[int, int]] = set()
        # Privileged intents the application has been granted (the Developer Portal's
        # switches); asking for another closes the connection with 4014, as Discord does.
        self.granted_intents = MESSAGE_CONTENT_INTENT

    def shards_ready(self) -> set[tuple[int, int]]:
        return set(self._ready_shards)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.query = dict(request.query)
        self.connects += 1
        session = Session(ws)
        self._sessions.append(session)
        await self._send(session, {"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}})
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_frame(session, json.loads(msg.data))
        finally:
            self._sessions.remove(session)
            self._set_ready(session.shard, False)
        return ws

    async def _on_frame(self, session: Session, frame: Json) -> None:
        op = frame.get("op")
        data = frame.get("d") or {}
        if op == HEARTBEAT:
            await self._send(session, {"op": HEARTBEAT_ACK})
        elif op == IDENTIFY:
            if data.get("token") != self._token:
                await session.ws.close(
                    code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed."
                )
                return
            if int(data.get("intents") or 0) & MESSAGE_CONTENT_INTENT & ~self.granted_intents:
                await session.ws.close(
                    code=CLOSE_DISALLOWED_INTENTS, message=b"Disallowed intent(s)."
                )
                return
            shard_id, count = data.get("shard") or (0, 1)
            if not 0 <= shard_id < count:
                await session.ws.close(code=CLOSE_INVALID_SHARD, message=b"Invalid shard.")
                return
            self.identify = data
            session.shard = (shard_id, count)
            session.session_id = secrets.token_hex(16)
            self._resumable[session.session_id] = session
            await self._dispatch_to(
                session, "READY", self._ready_payload(session.session_id, session.shard)
            )
            for guild in self._guild_payloads(session.shard):
                await self._dispatch_to(session, "GUILD_CREATE", guild)
            self._set_ready(session.shard, True)
        elif op == RESUME:
            old = self._resumable.get(data.get("session_id") or "")
            if old is None or data.get("token") != self._token:
                await self._send(session, {"op": INVALID_SESSION, "d": False})
                return
            session.shard, session.session_id, session.seq = old.shard, old.session_id, old.seq
            self._resumable[data["session_id"]] = session
            self.resumes += 1
            await self._dispatch_to(session, "RESUMED", {})
            self._set_ready(session.shard, True)
        else:
            log.debug("fake gateway ignores op %s", op)

    def _set_ready(self, shard: tuple[int, int], ready: bool) -> None:
        if ready:
            self._ready_shards.add(shard)
        else:
            self._ready_shards.discard(shard)
        count = shard[1]
        if all((i, count) in self._ready_shards for i in range(count)):
            self.ready.set()
        else:
            self.ready.clear()

    async def _send(self, session: Session, frame: Json) -> None:
        if session.ws.closed:
            raise RuntimeError("the bot is not connected to the fake gateway")
        async with session.lock:
            await session.ws.send_str(json.dumps(frame))

    async def _dispatch_to(self, session: Session, event: str, data: Any) -> None:
        session.seq += 1
        await self._send(session, {"op": DISPATCH, "t": event, "s": session.seq, "d": data})

    def _session_for(self, guild_id: int | None) -> Session:
        for session in self._sessions:
            if session.session_id is not None and session.owns(guild_id):
                return session
        raise RuntimeError(f"no shard of the bot is connected for guild {guild_id}")

    async def dispatch(self, event: str, data: Any) -> None:
        """Send one DISPATCH frame to the shard that owns the event's guild."""
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        await self._dispatch_to(self._session_for(int(guild_id) if guild_id else None), event, data)

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.ws.close()
