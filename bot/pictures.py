"""What counts as a picture in a message, and where each one is fetched from.

- **Attachments** that look like images.
- **Links** in the text: fetched directly when they point to IMAGE_LINK_HOSTS
  (`Downloader.link_allowed`); any other link is never fetched by the bot: the picture of
  Discord's own preview of it (an embed whose image sits on Discord's media proxy, an
  attachment host) is used instead. Discord often adds that preview a moment after the
  message, in a message update: a mention waits for it up to LINK_PREVIEW_WAIT_S. A link
  with no preview is answered with the hosts links may point to.
- **Stickers**: PNG, APNG and GIF stickers from DISCORD_CDN_URL; Lottie stickers are
  vectors, refused with a clear message.
- **Custom emoji** (`<:name:id>`, `<a:name:id>`) in the text, from DISCORD_CDN_URL.

Links and emoji are taken out of the question text (`question_text`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import discord

from bot.download import Downloader, ImageRef
from bot.errors import VectorSticker

log = logging.getLogger(__name__)

# Discord turns http(s)://… into a link up to whitespace; `<…>` around it suppresses the
# preview but keeps the link. Closing punctuation right after a link is the sentence's.
_LINK_RE = re.compile(r"<?(https?://[^\s<>]+)>?")
_TRAILING = ".,;:!?)]}'\""
_EMOJI_RE = re.compile(r"<(a?):([A-Za-z0-9_~]{1,32}):(\d{15,21})>")
_STICKER_EXTENSIONS = {
    discord.StickerFormatType.png: "png",
    discord.StickerFormatType.apng: "png",  # Discord serves APNG stickers as .png
    discord.StickerFormatType.gif: "gif",
}


def links_in(text: str) -> list[str]:
    """The links in `text`, in order, each once."""
    found: list[str] = []
    for match in _LINK_RE.finditer(text):
        url = match.group(1).rstrip(_TRAILING)
        if url not in found:
            found.append(url)
    return found


def _unpreviewed(text: str) -> set[str]:
    """Links written `<like this>`: Discord makes no preview of them."""
    return {m.group(1) for m in _LINK_RE.finditer(text) if m.group(0)[0] + m.group(0)[-1] == "<>"}


def _drop_link(match: re.Match[str]) -> str:
    url = match.group(1)
    return " " + url[len(url.rstrip(_TRAILING)) :]  # the sentence's punctuation stays


def question_text(text: str) -> str:
    """`text` without its links and custom emoji (they are pictures, not words)."""
    return " ".join(_EMOJI_RE.sub(" ", _LINK_RE.sub(_drop_link, text)).split())


def _same_link(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        parts = urlsplit(url)
        return (
            f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}?{parts.query}"
        )

    try:
        return norm(a) == norm(b)
    except ValueError:
        return False


def _preview_picture(embed: discord.Embed) -> str | None:
    """The embed's picture on Discord's media proxy (never the site's own URL)."""
    for media in (embed.image, embed.thumbnail):
        if media.proxy_url:
            return media.proxy_url
    return None


def _name_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path.rsplit("/", 1)[-1] or parts.hostname or "link"


@dataclass(frozen=True, slots=True)
class Found:
    """A message's pictures, and whether a link still waits for Discord's preview."""

    refs: list[ImageRef]
    awaiting_preview: bool


class Pictures:
    """Finds the pictures of a message (see the module docstring)."""

    def __init__(self, downloader: Downloader, *, cdn_url: str, preview_wait_s: float) -> None:
        self._downloader = downloader
        self._cdn_url = cdn_url.rstrip("/")
        self._preview_wait_s = preview_wait_s

    def find(self, message: discord.Message) -> list[ImageRef]:
        """The pictures of `message` as it stands (previews not waited for)."""
        return self._found(message).refs

    async def find_waiting(
        self, client: discord.Client, message: discord.Message
    ) -> list[ImageRef]:
        """The pictures of a message just posted: a link without its preview yet waits for
        the message update that brings it, up to LINK_PREVIEW_WAIT_S."""
        found = self._found(message)
        if not found.awaiting_preview or self._preview_wait_s <= 0:
            return found.refs
        # discord.py updates the cached message in place on MESSAGE_UPDATE, so an update
        # that came before this point is already in `message`; later ones wake this wait.
        try:
            async with asyncio.timeout(self._preview_wait_s):
                while found.awaiting_preview:
                    event = await client.wait_for(
                        "raw_message_edit", check=lambda e: e.message_id == message.id
                    )
                    found = self._found(event.message)
        except TimeoutError:
            log.info("no preview came for a link within %.1f s", self._preview_wait_s)
        return found.refs

    def _found(self, message: discord.Message) -> Found:
        refs = [ImageRef.from_attachment(a) for a in message.attachments]
        refs = [r for r in refs if r.looks_like_image()]
        refs.extend(self._sticker(s) for s in message.stickers)
        text = message.content
        # Pictures named in the text, by position: a ref, or a link whose preview is missing.
        items: list[tuple[int, ImageRef | str]] = []
        for match in _EMOJI_RE.finditer(text):
            animated, name, emoji_id = match.groups()
            url = f"{self._cdn_url}/emojis/{emoji_id}.{'gif' if animated else 'png'}"
            items.append((match.start(), ImageRef(url=url, filename=f":{name}:")))
        unmatched = [e for e in message.embeds if _preview_picture(e)]
        for url in links_in(text):
            embed = next((e for e in unmatched if e.url and _same_link(e.url, url)), None)
            if embed is not None:
                unmatched.remove(embed)
            if self._downloader.link_allowed(url):  # the original, not the preview
                items.append((text.find(url), ImageRef.from_link(url)))
            else:
                found = url if embed is None else self._preview(url, embed)
                items.append((text.find(url), found))
        awaiting = False
        # No preview will come for these: nothing to wait for.
        never = _unpreviewed(text) if not message.flags.suppress_embeds else set(links_in(text))
        for _, item in sorted(items, key=lambda pair: pair[0]):
            if isinstance(item, str):
                if unmatched:  # a preview whose URL Discord rewrote: paired in order
                    refs.append(self._preview(item, unmatched.pop(0)))
                    continue
                awaiting = awaiting or item not in never
                refs.append(ImageRef.refused(_name_of(item), self._downloader.link_refusal()))
            else:
                refs.append(item)
        return Found(refs=_unique(refs), awaiting_preview=awaiting)

    def _preview(self, url: str, embed: discord.Embed) -> ImageRef:
        picture = _preview_picture(embed)
        assert picture is not None
        return ImageRef(url=picture, filename=_name_of(url))

    def _sticker(self, sticker: discord.StickerItem) -> ImageRef:
        name = f"{sticker.name} (sticker)"
        extension = _STICKER_EXTENSIONS.get(sticker.format)
        if extension is None:
            return ImageRef.refused(name, VectorSticker())
        return ImageRef(url=f"{self._cdn_url}/stickers/{sticker.id}.{extension}", filename=name)


def _unique(refs: list[ImageRef]) -> list[ImageRef]:
    seen: set[str] = set()
    out: list[ImageRef] = []
    for ref in refs:
        key = ref.url or f"refused:{ref.filename}"
        if key in seen:
            continue
        seen.add(key)
        out.append(ref)
    return out
