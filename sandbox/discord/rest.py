"""The fake Discord's REST plumbing: JSON replies shaped like Discord's, bot-token checks,
recording every request (body, multipart files, reply) for tests to await, and faults a
test can inject (a connection cut before a request is applied, or after it, before the
reply)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import BodyPartReader, web

from sandbox.discord.recorder import Recorded, Recorder, SentFile

API_PREFIX = "/api/v10"

Handler = Callable[[web.Request, Recorded], Awaitable[web.Response]]


@dataclass
class Fault:
    """The next `times` requests that `matches` selects lose their connection: "drop"
    before the request is applied, "lose" after it was applied, before the reply (the
    confirmation lost on the way). discord.py sees a connection error, not an HTTP one."""

    matches: Callable[[Recorded], bool]
    mode: Literal["drop", "lose"]
    times: int = 1


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses bodies whose content-type is exactly "application/json".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def error(status: int, code: int, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status=status)


async def parse(request: web.Request, route: str) -> Recorded:
    """The request as a Recorded: JSON body, or multipart `payload_json` plus files."""
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


class RestRouter:
    """Adds recorded `/api/v10` routes to an aiohttp app."""

    def __init__(
        self,
        app: web.Application,
        recorder: Recorder,
        token: str,
        faults: list[Fault] | None = None,
    ) -> None:
        self._app = app
        self._recorder = recorder
        self._token = token
        self._faults = faults if faults is not None else []

    def _fault(self, record: Recorded) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(record):
                fault.times -= 1
                return fault
        return None

    def add(self, method: str, route: str, handler: Handler) -> None:
        # Interaction callbacks and webhooks authenticate by the token in their path.
        needs_auth = not route.startswith(("/interactions/", "/webhooks/"))

        async def wrapped(request: web.Request) -> web.Response:
            record = await parse(request, route)
            fault = self._fault(record)
            try:
                if needs_auth and request.headers.get("Authorization") != f"Bot {self._token}":
                    response = error(401, 0, "401: Unauthorized")
                elif fault is not None and fault.mode == "drop":
                    response = web.Response(status=499)  # never sent: the connection is cut
                else:
                    response = await handler(request, record)
                if fault is not None and request.transport is not None:
                    request.transport.close()
                record.status = response.status
                body = response.body
                if isinstance(body, bytes) and response.content_type == "application/json":
                    record.response = json.loads(body)
            finally:
                # Recorded once answered, so a waiting test sees the response too.
                await self._recorder.add(record)
            return response

        self._app.router.add_route(method, API_PREFIX + route, wrapped)
