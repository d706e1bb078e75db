"""Safe downloads against the fake CDN: hosts, schemes, declared and real sizes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.download import (
    AddressNotPublic,
    Downloader,
    ImageRef,
    PublicOnlyResolver,
    is_public_address,
)
from bot.errors import (
    AttachmentHostNotAllowed,
    DownloadFailed,
    LinkAddressNotPublic,
    LinkHostNotAllowed,
)
from inference.errors import EmptyImage, ImageTooLarge
from sandbox.discord import DiscordServer

CAP = 1000


@pytest.fixture
async def downloader() -> AsyncIterator[Downloader]:
    async with aiohttp.ClientSession() as session:
        yield Downloader(
            session,
            allowed_hosts=("cdn.discordapp.com", "media.discordapp.net"),
            http_hosts=("127.0.0.1",),
            link_hosts=("i.imgur.com", "127.0.0.1", "localhost", "10.1.2.3", "[::1]", "::1"),
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


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),  # loopback
        ("::1", False),
        ("10.0.0.1", False),  # private
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # link-local (cloud metadata)
        ("fe80::1%eth0", False),
        ("fd00::1", False),  # IPv6 unique local
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::ffff:127.0.0.1", False),  # IPv4-mapped IPv6
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("not an address", False),
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("::ffff:93.184.215.14", True),
    ],
)
def test_public_address_check(address: str, public: bool) -> None:
    assert is_public_address(address) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://i.imgur.com/a.png",  # plain http to a public host
        "https://i.imgur.com:8443/a.png",
        "https://user:pw@i.imgur.com/a.png",
        "https://example.com/a.png",  # not a link host
        "https://10.1.2.3/a.png",  # a link host, but an IP literal that is private
        "https://[::1]/a.png",
        "http://localhost/a.png",  # a link host, but not a plain-http host
    ],
)
def test_links_not_fetched_directly(downloader: Downloader, url: str) -> None:
    assert not downloader.link_allowed(url)
    with pytest.raises(LinkHostNotAllowed, match=r"i\.imgur\.com"):
        downloader.check(ImageRef.from_link(url))


def test_links_fetched_directly(downloader: Downloader) -> None:
    assert downloader.link_allowed("https://i.imgur.com/abc.gif")
    assert downloader.link_allowed("https://I.IMGUR.COM/abc.gif")
    assert downloader.link_allowed("http://127.0.0.1:8080/cdn/a.png")  # both lists
    # The link rules are not the attachment rules: Discord's own files stay on their own.
    with pytest.raises(AttachmentHostNotAllowed):
        downloader.check(ImageRef(url="https://i.imgur.com/abc.gif", filename="a"))


async def test_a_name_resolving_to_a_private_address_is_never_connected(
    downloader: Downloader,
) -> None:
    # "localhost" is a link host here and resolves (from /etc/hosts, no network) to
    # loopback: the resolver the connection uses refuses it.
    with pytest.raises(LinkAddressNotPublic):
        await downloader.fetch(ImageRef.from_link("https://localhost/a.png"))
    resolver = PublicOnlyResolver(frozenset({"127.0.0.1"}))
    try:
        with pytest.raises(AddressNotPublic):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()


def test_refused_pictures_are_refused_before_any_download(downloader: Downloader) -> None:
    with pytest.raises(LinkHostNotAllowed):
        downloader.check(ImageRef.refused("x", LinkHostNotAllowed()))
