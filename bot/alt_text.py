"""Automatic alt text: in the channels admins chose (`/settings alt_text_channels`), a
picture posted without a description gets one reply, AI label first, written by the model.

Which messages: a person's (not a bot's, not a webhook's), with picture attachments that
carry no `description`, from someone who has not opted out (`/alttext mine:false`), within
the channel's hourly cap (ALT_TEXT_PER_CHANNEL_PER_HOUR) and the server's daily quota: the
server chose the mode, so the server pays, never the poster.

Mostly text? Decided on the bot, before queueing, from a 256-pixel-wide greyscale copy
(`looks_like_text`): a screenshot, a document or a sign is mostly one flat background
(the commonest of 16 grey levels covers at least 45 % of it) crossed by many sharp
edges (at least 6 % of horizontally neighbouring pixels differ by more than a quarter of
the grey range). Photos fail the first test, flat drawings and diagrams the second.
It costs a few milliseconds and no GPU time; a picture that passes gets an `ocr` job
beside its `describe` job, and the text is quoted verbatim.

The jobs are background work in the queue (`QueueClient.submit(background=True)`):
taken only in batch slots interactive requests leave. A message's jobs are one request
of the queue (`inference.queue.records`, route `ROUTE`): its outcomes are kept in the
request's record like any request's, and once the last is in, the bot's results stream
brings the record here, so one reply is posted exactly once, by any run of the bot.
What was posted is remembered per message (`AltTextStore`), so that a deleted or fixed
original takes its reply with it, and the buttons can re-post it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO

import discord
from PIL import Image, ImageChops
from redis.asyncio import Redis

from bot.answer import MESSAGE_LIMIT, safe_text, truncate
from bot.download import ImageRef
from inference.queue import JobResult, Keys, redis_boundary
from inference.queue.connection import atomic_pipeline, awaited
from inference.tasks import Task

log = logging.getLogger(__name__)

ROUTE = "alt"  # the route of its requests' records (bot.delivery) to this module
MAX_ALT_TEXT_CHARS = 1_024  # Discord's limit on an attachment's description
# A message's reply is remembered this long: its buttons and its clean-up work until then.
REPLY_TTL_S = 7 * 24 * 3600
_HOUR_TTL_S = 2 * 3600
# Longer than a re-post takes (the files are within the server's upload limit); a bot that
# dies mid-re-post frees the message after this long.
REPOST_LOCK_S = 120
# Mostly text: see the module docstring.
_THUMB_WIDTH = 256
_FLAT_SHARE = 0.45
_EDGE_SHARE = 0.06
_EDGE_STEP = 64  # of 255

# The AI label, first in every reply (readers skip long descriptions once they know).
AI_LABELS = {
    "en": "AI description:",
    "de": "KI-Beschreibung:",
    "es": "Descripción generada por IA:",
    "fr": "Description générée par IA :",
    "it": "Descrizione generata dall'IA:",
    "nl": "AI-beschrijving:",
    "pl": "Opis wygenerowany przez AI:",
    "pt": "Descrição gerada por IA:",
    "ru": "Описание от ИИ:",
    "uk": "Опис від ШІ:",
    "sv": "AI-beskrivning:",
    "tr": "Yapay zekâ açıklaması:",
    "ja": "AIによる説明:",
    "ko": "AI 설명:",
    "zh": "AI 描述：",
}
TEXT_LABEL = "Text:"
OPT_OUT_NOTICE = (
    "-# I describe pictures posted here without alt text, for people who cannot see them. "
    "Rather I left yours alone? `/alttext mine:False`"
)


def ai_label(language: str) -> str:
    return AI_LABELS.get(language, AI_LABELS["en"])


def wanting_alt_text(message: discord.Message, limit: int) -> list[discord.Attachment]:
    """The pictures of a person's message that have no alt text (at most `limit`)."""
    if message.author.bot or message.webhook_id is not None or message.guild is None:
        return []
    found = [
        a
        for a in message.attachments
        if ImageRef.from_attachment(a).looks_like_image() and not (a.description or "").strip()
    ]
    return found[:limit]


def looks_like_text(data: bytes) -> bool:
    """Whether a picture is mostly text (the module docstring says how it is decided)."""
    try:
        with Image.open(BytesIO(data)) as image:
            image.draft("L", (_THUMB_WIDTH * 2, _THUMB_WIDTH * 2))  # JPEG: decode small
            grey = image.convert("L")
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    height = max(1, round(grey.height * _THUMB_WIDTH / max(1, grey.width)))
    small = grey.resize((_THUMB_WIDTH, min(height, 4 * _THUMB_WIDTH)))
    histogram = small.histogram()
    levels = [sum(histogram[i : i + 16]) for i in range(0, 256, 16)]
    total = small.width * small.height
    if max(levels) < _FLAT_SHARE * total:
        return False
    # Sharp horizontal steps: each pixel against its right-hand neighbour.
    w, h = small.size
    steps = ImageChops.difference(small.crop((1, 0, w, h)), small.crop((0, 0, w - 1, h)))
    edges = sum(steps.histogram()[_EDGE_STEP + 1 :])
    return edges >= _EDGE_SHARE * total


# --- the reply ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Described:
    """What the model said about one picture: its description, and its text if read."""

    description: str
    text: str | None = None

    def alt_text(self, language: str) -> str:
        """The attachment description of a re-post: label, description and the text read,
        within Discord's 1,024 characters."""
        body = f"{ai_label(language)} {self.description}".strip()
        if self.text:
            body = f"{body} {TEXT_LABEL} {self.text}"
        return truncate(" ".join(body.split()), MAX_ALT_TEXT_CHARS)


def described_from(results: Sequence[JobResult]) -> Described | None:
    """One picture's outcomes (a describe job, maybe an ocr job) as one Described; None
    when the description failed (nothing worth posting)."""
    description, text = None, None
    for result in results:
        if not result.ok or not result.text.strip():
            continue
        if result.task is Task.OCR:
            text = result.text.strip()
        else:
            description = result.text.strip()
    return None if description is None else Described(description, text)


def compose_reply(
    described: Sequence[Described | None], language: str, *, notes: Sequence[str] = ()
) -> str:
    """The reply: the AI label first, one line per picture, the text read quoted as it was
    read, then `notes` (small print). Safe to post (no pings, markdown escaped)."""
    lines = [f"**{ai_label(language)}**"]
    numbered = len(described) > 1
    budget = (MESSAGE_LIMIT - 200 - sum(len(n) + 1 for n in notes)) // max(1, len(described))
    for i, item in enumerate(described, start=1):
        prefix = f"{i}. " if numbered else ""
        if item is None:
            lines.append(f"{prefix}(no description: the picture could not be read)")
            continue
        body = safe_text(item.description)
        if item.text:
            quoted = "\n".join("> " + safe_text(line) for line in item.text.splitlines() if line)
            body = f"{body}\n{TEXT_LABEL}\n{quoted}"
        lines.append(prefix + truncate(body, budget))
    return "\n".join([*lines, *notes])


# --- what is remembered --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posted:
    """A described message: where its reply is, whose it is, each picture's alt text."""

    channel_id: int
    poster_id: int
    reply_id: int = 0  # 0: not posted (yet)
    alt_texts: tuple[str, ...] = ()
    gone: bool = False  # the original was deleted or fixed: post nothing, keep nothing

    def to_json(self) -> str:
        return json.dumps(
            {
                "ch": self.channel_id,
                "u": self.poster_id,
                "r": self.reply_id,
                "alts": list(self.alt_texts),
                "gone": self.gone,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> Posted | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            alts = tuple(str(a)[:MAX_ALT_TEXT_CHARS] for a in data.get("alts", []))
            return cls(int(data["ch"]), int(data["u"]), int(data["r"]), alts, bool(data["gone"]))
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed alt-text record")
            return None


class AltTextStore:
    """Per-person choices, per-guild notices, per-channel hourly counts, per-message replies."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def opted_out(self, user_id: int) -> bool:
        with redis_boundary():
            found = await awaited(self._redis.sismember(self._keys.alt_opt_out, str(user_id)))
        return bool(found)

    async def choose(self, user_id: int, *, allowed: bool) -> None:
        key = self._keys.alt_opt_out
        with redis_boundary():
            if allowed:
                await awaited(self._redis.srem(key, str(user_id)))
            else:
                await awaited(self._redis.sadd(key, str(user_id)))

    async def first_in_guild(self, guild_id: int) -> bool:
        """True exactly once per guild: its first description carries the opt-out notice."""
        with redis_boundary():
            return bool(await self._redis.set(self._keys.alt_notice(guild_id), b"1", nx=True))

    async def take_hourly(self, channel_id: int, wanted: int, cap: int) -> int:
        """Count up to `wanted` pictures against the channel's hour; how many fit."""
        hour = datetime.now(UTC).strftime("%Y-%m-%dT%H")
        key = self._keys.alt_hourly(channel_id, hour)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.incrby(key, wanted)
            pipe.expire(key, _HOUR_TTL_S)
            total, _ = await pipe.execute()
            fit = max(0, min(wanted, cap - (int(total) - wanted)))
            if fit < wanted:
                await self._redis.decrby(key, wanted - fit)
        return fit

    async def get(self, message_id: int) -> Posted | None:
        with redis_boundary():
            raw = await self._redis.get(self._keys.alt_reply(message_id))
        return Posted.from_json(raw)

    async def swap(self, message_id: int, posted: Posted) -> Posted | None:
        """Store `posted` for the message and return what was there, atomically (a delete
        racing a reply being posted: whichever comes second sees the other)."""
        with redis_boundary():
            old = await self._redis.set(
                self._keys.alt_reply(message_id), posted.to_json(), ex=REPLY_TTL_S, get=True
            )
        return Posted.from_json(old)

    async def forget(self, message_id: int) -> None:
        with redis_boundary():
            await self._redis.delete(self._keys.alt_reply(message_id))

    async def begin_repost(self, message_id: int) -> bool:
        """True for the one press that may re-post the message now: a double click, or
        the poster pressing in two clients, must not post the pictures twice."""
        with redis_boundary():
            key = self._keys.alt_reposting(message_id)
            return bool(await self._redis.set(key, b"1", nx=True, ex=REPOST_LOCK_S))

    async def end_repost(self, message_id: int) -> None:
        with redis_boundary():
            await self._redis.delete(self._keys.alt_reposting(message_id))


def gone_marker(channel_id: int, poster_id: int = 0) -> Posted:
    return Posted(channel_id, poster_id, gone=True)


def fits_upload(attachments: Sequence[discord.Attachment], limit_bytes: int) -> bool:
    """Whether a re-post of these files fits the server's upload limit."""
    return sum(a.size for a in attachments) <= limit_bytes


def repost_refusal(channel: object, me: discord.Member | None) -> str | None:
    """Why a re-post through a webhook cannot be offered here, or None when it can."""
    if isinstance(channel, discord.Thread):
        return "Re-posting is not available in threads."
    if not isinstance(channel, discord.TextChannel) or me is None:
        return "Re-posting is only available in text channels."
    if not channel.permissions_for(me).manage_webhooks:
        return "Re-posting with alt text needs my Manage Webhooks permission here."
    return None
