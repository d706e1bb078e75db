"""What the bot sent to the fake Discord, kept in order so tests can await and assert on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SentFile:
    """One file part of a multipart request."""

    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Recorded:
    """One REST or CDN request: route template, path parameters, parsed JSON and files."""

    seq: int
    method: str
    route: str  # the template, e.g. "/channels/{channel_id}/messages"
    params: dict[str, str]
    query: dict[str, str]
    json: Any
    files: tuple[SentFile, ...]
    at: float = field(default_factory=time.monotonic)
    status: int = 0  # filled in once the fake server has answered
    response: Any = None  # the JSON it answered with, if any

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def payload(self) -> dict[str, Any]:
        """The message-ish payload: interaction callbacks nest it under `data`."""
        body = self.json if isinstance(self.json, dict) else {}
        if self.route.endswith("/callback"):
            inner = body.get("data")
            return inner if isinstance(inner, dict) else {}
        return body

    @property
    def content(self) -> str:
        value = self.payload.get("content")
        return value if isinstance(value, str) else ""

    @property
    def embed_text(self) -> str:
        embeds = self.payload.get("embeds") or []
        parts: list[str] = []
        for embed in embeds:
            parts.extend(str(embed.get(k) or "") for k in ("title", "description"))
            parts.extend(f"{f.get('name')} {f.get('value')}" for f in embed.get("fields") or [])
            footer = embed.get("footer") or {}
            parts.append(str(footer.get("text") or ""))
        return "\n".join(p for p in parts if p)

    @property
    def text(self) -> str:
        """Content and embed text together, for assertions that don't care where text went."""
        return "\n".join(p for p in (self.content, self.embed_text) if p)

    @property
    def flags(self) -> int:
        value = self.payload.get("flags") or 0
        return int(value)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)


Predicate = Callable[[Recorded], bool]


class Recorder:
    """An append-only log with `wait_for`, so tests await events instead of sleeping. With
    `keep`, only the newest `keep` records stay (a long-running sandbox); sequence numbers
    keep counting."""

    def __init__(self, keep: int | None = None) -> None:
        self.requests: list[Recorded] = []
        self._keep = keep
        self._dropped = 0
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return self._dropped + len(self.requests)

    async def add(self, record: Recorded) -> None:
        async with self._changed:
            record.seq = len(self)
            self.requests.append(record)
            if self._keep is not None and len(self.requests) > self._keep:
                excess = len(self.requests) - self._keep
                del self.requests[:excess]
                self._dropped += excess
            self._changed.notify_all()

    def next_seq(self) -> int:
        return len(self)

    def matching(self, predicate: Predicate, *, since: int = 0) -> list[Recorded]:
        return [r for r in self.requests[max(0, since - self._dropped) :] if predicate(r)]

    async def wait_for(
        self, predicate: Predicate, *, since: int = 0, count: int = 1, timeout_s: float = 10.0
    ) -> list[Recorded]:
        """Wait until `count` requests recorded at or after `since` match; return them."""

        def ready() -> bool:
            return len(self.matching(predicate, since=since)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout_s)
            except TimeoutError:
                seen = "\n  ".join(r.key for r in self.matching(lambda r: True, since=since))
                seen = seen or "(nothing)"
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {count} matching request(s); "
                    f"recorded since #{since}:\n  {seen}"
                ) from None
        return self.matching(predicate, since=since)[:count]
