"""The fake CDN: serves attachment bytes by URL and records each fetch, so tests can prove
the bot did (or did not) download something."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from sandbox.discord.payloads import snowflake
from sandbox.discord.recorder import Recorded, Recorder


class Cdn:
    """Files by path under `/cdn/`; URLs are built from the server's base URL."""

    def __init__(self, recorder: Recorder, base_url: Callable[[], str]) -> None:
        self._recorder = recorder
        self._base_url = base_url
        self.files: dict[str, tuple[bytes, str]] = {}

    def add(self, data: bytes, filename: str, content_type: str) -> str:
        """Serve `data` and return its URL."""
        name = f"attachments/{snowflake()}/{filename}"
        self.files[name] = (data, content_type)
        return f"{self._base_url()}/cdn/{name}"

    def route(self, app: web.Application) -> None:
        app.router.add_get("/cdn/{name:.+}", self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
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
        await self._recorder.add(record)
        if name not in self.files:
            return web.Response(status=404)
        data, content_type = self.files[name]
        return web.Response(body=data, content_type=content_type or "application/octet-stream")
