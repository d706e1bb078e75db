"""Safe downloads against the fake CDN: hosts, schemes, declared and real sizes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.download import Downloader, ImageRef
from bot.errors import AttachmentHostNotAllowed, DownloadFailed
from inference.errors import EmptyImage, ImageTooLarge
from sandbox.discord import DiscordServer
from tests.discord_server.fixtures import server

__all__ = ["server"]  # fixtures, used by name

CAP = 1000


@pytest.fixture
async def downloader() -> AsyncIterator[Downloader]:
    async with aiohttp.ClientSession() as session:
        yield Downloader(
            session,
            allowed_hosts=("cdn.discordapp.com", "media.discordapp.net"),
            http_hosts=("127.0.0.1",),
            max_bytes=CAP,
            timeout_s=5,
        )


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.discordapp.com/a.png",  # plain http to a public host
        "https://evil.example/a.png",
        "https://cdn.discordapp.com.evil.example/a.png",
        "https://cdn.discordapp.com@evil.example/a.png",
        "https://cdn.discordapp.com:8443/a.png",
        "ftp://cdn.discordapp.com/a.png",
        "file:///etc/passwd",
        "http://localhost/a.png",
        "https://[::1/a.png",
    ],
)
def test_hosts_and_schemes_not_allowed(downloader: Downloader, url: str) -> None:
    with pytest.raises(AttachmentHostNotAllowed):
        downloader.check(ImageRef(url=url, filename="a.png"))


def test_allowed_hosts_pass(downloader: Downloader) -> None:
    downloader.check(ImageRef(url="https://cdn.discordapp.com/attachments/1/2/a.png", filename="a"))
    downloader.check(ImageRef(url="https://MEDIA.discordapp.net/x.png?ex=1", filename="a"))


def test_declared_size(downloader: Downloader) -> None:
    url = "https://cdn.discordapp.com/a.png"
    with pytest.raises(ImageTooLarge):
        downloader.check(ImageRef(url=url, filename="a", declared_size=CAP + 1))
    with pytest.raises(EmptyImage):
        downloader.check(ImageRef(url=url, filename="a", declared_size=0))


async def test_fetch_streams_with_a_cap(server: DiscordServer, downloader: Downloader) -> None:
    ok = server.add_cdn_file(b"x" * CAP, "ok.png", "image/png")
    assert await downloader.fetch(ImageRef(url=ok, filename="ok.png")) == b"x" * CAP
    big = server.add_cdn_file(b"x" * (CAP + 1), "big.png", "image/png")
    with pytest.raises(ImageTooLarge):
        await downloader.fetch(ImageRef(url=big, filename="big.png", declared_size=10))
    empty = server.add_cdn_file(b"", "e.png", "image/png")
    with pytest.raises(EmptyImage):
        await downloader.fetch(ImageRef(url=empty, filename="e.png"))
    with pytest.raises(DownloadFailed):
        await downloader.fetch(ImageRef(url=server.base_url + "/cdn/missing.png", filename="m"))


def test_looks_like_image() -> None:
    assert ImageRef(url="u", filename="a.PNG").looks_like_image()
    assert ImageRef(url="u", filename="x", content_type="image/webp").looks_like_image()
    assert not ImageRef(url="u", filename="notes.txt", content_type="text/plain").looks_like_image()
