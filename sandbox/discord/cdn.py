"""The fake CDN: serves attachment bytes by URL and records each fetch, so tests can prove
the bot did (or did not) download something. Stickers and custom emoji sit where Discord's
CDN keeps them (`stickers/{id}.{ext}`, `emojis/{id}.{ext}`), so a bot whose
DISCORD_CDN_URL is `{base_url}/cdn` finds them as it would on Discord."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from aiohttp import web

from sandbox.discord.payloads import snowflake
from sandbox.discord.recorder import Recorded, Recorder


class Cdn:
    """Files by path under `/cdn/`; URLs are built from the server's base URL. With
    `max_bytes`, the oldest files go once the total passes it (their URLs then answer 404,
    as Discord's expired attachment links do)."""

    def __init__(
        self, recorder: Recorder, base_url: Callable[[], str], *, max_bytes: int | None = None
    ) -> None:
        self._recorder = recorder
        self._base_url = base_url
        self._max_bytes = max_bytes
        self._total = 0
        self.files: dict[str, tuple[bytes, str]] = {}  # oldest first

    @property
    def url(self) -> str:
        """The CDN's root, as DISCORD_CDN_URL names it."""
        return f"{self._base_url()}/cdn"

    def add(self, data: bytes, filename: str, content_type: str) -> str:
        """Serve `data` and return its URL."""
        name = f"attachments/{snowflake()}/{filename.replace('/', '_')}"
        return self.put(name, data, content_type)

    def put(self, name: str, data: bytes, content_type: str) -> str:
        """Serve `data` at `name` under the CDN's root; returns its URL."""
        self.files[name] = (data, content_type)
        self._total += len(data)
        while self._max_bytes is not None and self._total > self._max_bytes and len(self.files) > 1:
            oldest = next(iter(self.files))
            self._total -= len(self.files.pop(oldest)[0])
        return f"{self._base_url()}/cdn/{quote(name)}"

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
