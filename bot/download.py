"""Fetch picture bytes safely: allowed hosts only, bounded size, bounded time.

The bot must never become a way to make requests to arbitrary URLs, and never hold more
than the cap in memory, whatever a message's metadata claims. Two kinds of URL:

- What Discord itself serves (attachments, link previews on its media proxy, stickers,
  emoji): hosts in ATTACHMENT_HOSTS, no redirects.
- Links people paste: hosts in IMAGE_LINK_HOSTS, redirects followed only while every hop
  stays on that list (at most MAX_LINK_REDIRECTS), and the host must resolve to public
  addresses only. The check is made by the resolver the connection itself uses, so a
  name that resolves differently the second time (DNS rebinding) cannot reach a private
  address; IP literals are checked before connecting. Hosts in ATTACHMENT_HTTP_HOSTS (a
  loopback server in tests and the sandbox) are the operator's own and skip that check.

Both: https only (plain http for ATTACHMENT_HTTP_HOSTS), no credentials in the URL, the
same byte cap while streaming and the same timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
import discord
from aiohttp.abc import AbstractResolver, ResolveResult

from bot.answer import size_text
from bot.errors import (
    AttachmentHostNotAllowed,
    DownloadFailed,
    LinkAddressNotPublic,
    LinkHostNotAllowed,
)
from inference.errors import EmptyImage, ImageTooLarge, PalicordError

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp"})
HTTPS_PORT = 443
# Image hosts redirect once or twice (a short link, http → https, a CDN edge); more hops
# than this is a loop or an evasion.
MAX_LINK_REDIRECTS = 3
LINK_FAILED = "I couldn't download the picture from that link. Please try again."
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Where an image is and what Discord says about it (all of it untrusted)."""

    url: str
    filename: str
    declared_size: int | None = None
    content_type: str | None = None
    # A picture kept by the bot (inference.queue.memory), by digest: nothing to download.
    stored: str | None = None
    # A link a user pasted (IMAGE_LINK_HOSTS' rules) rather than something Discord serves.
    link: bool = False
    # Found but never to be fetched (a vector sticker, a link without a preview): why not.
    refusal: PalicordError | None = None

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

    @classmethod
    def from_link(cls, url: str) -> ImageRef:
        name = urlsplit(url).path.rsplit("/", 1)[-1] or "link"
        return cls(url=url, filename=name, link=True)

    @classmethod
    def refused(cls, filename: str, error: PalicordError) -> ImageRef:
        return cls(url="", filename=filename, refusal=error)

    def looks_like_image(self) -> bool:
        """Whether to try this attachment at all (the bytes decide whether it is one)."""
        if self.content_type and self.content_type.lower().startswith("image/"):
            return True
        return self.filename.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS


def is_public_address(address: str) -> bool:
    """Whether `address` (an IP literal) is a public unicast address: not loopback,
    private, link-local, shared, reserved, multicast or unspecified, nor an IPv6 form
    that carries such an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
        if any(v4 is not None and not is_public_address(str(v4)) for v4 in embedded):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_unspecified)


class AddressNotPublic(OSError):
    """A link's host resolved to an address the bot must not connect to."""


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp's default, refusing any name with a non-public address;
    the connection then goes to exactly the addresses checked. Names in `trusted` (the
    operator's ATTACHMENT_HTTP_HOSTS) resolve unchecked."""

    def __init__(self, trusted: frozenset[str]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._trusted = trusted

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in self._trusted:
            return found
        if not found or not all(is_public_address(r["host"]) for r in found):
            raise AddressNotPublic(f"{host} resolves to a non-public address")
        return found

    async def close(self) -> None:
        await self._inner.close()


class Downloader:
    """Downloads pictures from allowed hosts with a byte cap and a timeout."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allowed_hosts: tuple[str, ...],
        http_hosts: tuple[str, ...] = (),
        link_hosts: tuple[str, ...] = (),
        max_bytes: int,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._https_hosts = frozenset(h.lower() for h in allowed_hosts)
        self._http_hosts = frozenset(h.lower() for h in http_hosts)
        self._link_hosts = frozenset(h.lower() for h in link_hosts)
        self.link_hosts = tuple(link_hosts)  # in the operator's order, for messages
        self.max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s

    def too_large(self) -> ImageTooLarge:
        return ImageTooLarge(f"That file is too large; the limit is {size_text(self.max_bytes)}.")

    def link_allowed(self, url: str) -> bool:
        """Whether a pasted link may be fetched directly (else only its preview is read)."""
        return self._allowed(url, self._link_hosts, link=True) and self._literal_ok(url)

    def link_refusal(self) -> LinkHostNotAllowed:
        return LinkHostNotAllowed.naming(self.link_hosts)

    def _allowed(self, url: str, https_hosts: frozenset[str], *, link: bool = False) -> bool:
        """https to `https_hosts`, or plain http to ATTACHMENT_HTTP_HOSTS (for a link, only
        those also in IMAGE_LINK_HOSTS); never with credentials."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        host = (parts.hostname or "").lower()
        if parts.username or parts.password:
            return False
        if parts.scheme == "https":
            return host in https_hosts and port in (None, HTTPS_PORT)
        if parts.scheme == "http":
            return host in self._http_hosts and (not link or host in https_hosts)
        return False

    def _literal_ok(self, url: str) -> bool:
        """An IP-literal host never reaches the resolver: check it here."""
        host = (urlsplit(url).hostname or "").lower()
        if host in self._http_hosts:
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return True  # a name: the resolver checks what it resolves to
        return is_public_address(host)

    def check(self, ref: ImageRef) -> None:
        """Refuse before any network traffic: wrong host or scheme, declared too large."""
        if ref.refusal is not None:
            raise ref.refusal
        if ref.stored is not None:
            return  # not a download
        if ref.link:
            if not self.link_allowed(ref.url):
                raise self.link_refusal()
        elif not self._allowed(ref.url, self._https_hosts):
            raise AttachmentHostNotAllowed()
        if ref.declared_size is not None:
            if ref.declared_size > self.max_bytes:
                raise self.too_large()
            if ref.declared_size == 0:
                raise EmptyImage()

    async def fetch(self, ref: ImageRef) -> bytes:
        """The picture's bytes; raises a PalicordError fit for the user on any problem."""
        self.check(ref)
        if ref.link:
            return await self._fetch_link(ref.url)
        try:
            # No redirects: a redirect could leave the allowed hosts.
            async with self._session.get(
                ref.url, allow_redirects=False, timeout=self._timeout
            ) as resp:
                return await self._read(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("attachment download failed: %s", type(exc).__name__)
            raise DownloadFailed() from exc

    async def _fetch_link(self, url: str) -> bytes:
        """A pasted link: its own session, whose resolver admits public addresses only;
        no proxy from the environment (it would connect on our behalf, unchecked), no
        cookies; redirects one hop at a time, each checked like the link itself."""
        connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(self._http_hosts))
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    trust_env=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                    timeout=self._timeout,
                ) as session,
                asyncio.timeout(self._timeout_s),  # one budget for every hop
            ):
                for _ in range(MAX_LINK_REDIRECTS + 1):
                    async with session.get(url, allow_redirects=False) as resp:
                        location = resp.headers.get("Location")
                        if resp.status not in _REDIRECT_STATUSES or not location:
                            return await self._read(resp, LINK_FAILED)
                    url = urljoin(url, location)
                    if not self.link_allowed(url):
                        log.info("link redirected off the allowed hosts")
                        raise self.link_refusal()
                log.info("link redirected more than %s times", MAX_LINK_REDIRECTS)
                raise DownloadFailed(LINK_FAILED)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, AddressNotPublic):
                raise LinkAddressNotPublic() from exc
            log.info("link download failed: %s", type(exc).__name__)
            raise DownloadFailed(LINK_FAILED) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("link download failed: %s", type(exc).__name__)
            raise DownloadFailed(LINK_FAILED) from exc

    async def _read(self, resp: aiohttp.ClientResponse, failed: str | None = None) -> bytes:
        if resp.status != 200:
            log.info("picture download got HTTP %s", resp.status)
            raise DownloadFailed(failed)
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise self.too_large()
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
            buf.extend(chunk)
            if len(buf) > self.max_bytes:
                raise self.too_large()
        if not buf:
            raise EmptyImage()
        return bytes(buf)
