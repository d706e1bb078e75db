"""Fetch attachment bytes safely: allowed hosts only, bounded size, bounded time.

The bot must never become a way to make requests to arbitrary URLs, and never hold more
than the cap in memory, whatever a message's attachment metadata claims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.errors import AttachmentHostNotAllowed, DownloadFailed
from inference.errors import EmptyImage, ImageTooLarge

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp"})
HTTPS_PORT = 443


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image is and what Discord says about it (all of it untrusted)."""

    url: str
    filename: str
    declared_size: int | None = None
    content_type: str | None = None
    # A picture kept by the bot (inference.queue.memory), by digest: nothing to download.
    stored: str | None = None

    @classmethod
    def stored_picture(cls, digest: str) -> ImageRef:
        return cls(url="", filename="the same picture", stored=digest)

    @classmethod
    def from_attachment(cls, attachment: discord.Attachment) -> ImageRef:
        return cls(
            url=attachment.url,
            filename=attachment.filename,
            declared_size=attachment.size,
            content_type=attachment.content_type,
        )

    def looks_like_image(self) -> bool:
        """Whether to try this attachment at all (the bytes decide whether it is one)."""
        if self.content_type and self.content_type.lower().startswith("image/"):
            return True
        return self.filename.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


class Downloader:
    """Downloads attachments from allowed hosts with a byte cap and a timeout."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allowed_hosts: tuple[str, ...],
        http_hosts: tuple[str, ...] = (),
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._https_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._http_hosts = frozenset(h.lower() for h in http_hosts)
        self.max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def too_large(self) -> ImageTooLarge:
        return ImageTooLarge(f"That file is too large; the limit is {_mib(self.max_bytes)}.")

    def check(self, ref: ImageRef) -> None:
        """Refuse before any network traffic: wrong host or scheme, declared too large."""
        if ref.stored is not None:
            return  # not a download
        try:
            parts = urlsplit(ref.url)
            port = parts.port
        except ValueError:
            raise AttachmentHostNotAllowed() from None
        host = (parts.hostname or "").lower()
        if parts.scheme == "https":
            allowed = host in self._https_hosts and port in (None, HTTPS_PORT)
        elif parts.scheme == "http":
            allowed = host in self._http_hosts
        else:
            allowed = False
        if not allowed or parts.username or parts.password:
            raise AttachmentHostNotAllowed()
        if ref.declared_size is not None:
            if ref.declared_size > self.max_bytes:
                raise self.too_large()
            if ref.declared_size == 0:
                raise EmptyImage()

    async def fetch(self, ref: ImageRef) -> bytes:
        """The attachment's bytes; raises a PalicordError fit for the user on any problem."""
        self.check(ref)
        try:
            # No redirects: a redirect could leave the allowed hosts.
            async with self._session.get(
                ref.url, allow_redirects=False, timeout=self._timeout
            ) as resp:
                if resp.status != 200:
                    log.info("attachment download got HTTP %s", resp.status)
                    raise DownloadFailed()
                if resp.content_length is not None and resp.content_length > self.max_bytes:
                    raise self.too_large()
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                    buf.extend(chunk)
                    if len(buf) > self.max_bytes:
                        raise self.too_large()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("attachment download failed: %s", type(exc).__name__)
            raise DownloadFailed() from exc
        if not buf:
            raise EmptyImage()
        return bytes(buf)
