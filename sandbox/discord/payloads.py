"""JSON payloads shaped like Discord's API v10 objects, just complete enough for discord.py.

Builders return plain dicts so a test can tweak any field (a lying `size`, a foreign `url`)
before the server sends it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

# Real snowflakes start with a millisecond timestamp; discord.py derives `created_at` from
# it (and the bot decides from that whether an interaction token is still valid).
DISCORD_EPOCH_MS = 1_420_070_400_000
_counter = itertools.count(1)

# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MANAGE_GUILD = 1 << 5
MANAGE_MESSAGES = 1 << 13
MANAGE_WEBHOOKS = 1 << 29
MEMBER_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | ATTACH_FILES | READ_MESSAGE_HISTORY
ADMIN_PERMISSIONS = MEMBER_PERMISSIONS | MANAGE_GUILD
# What the bot's own role grants on top of @everyone's (FakeGuild.bot_permissions).
BOT_PERMISSIONS = MANAGE_MESSAGES | MANAGE_WEBHOOKS

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def snowflake() -> int:
    """A fresh, process-unique id that encodes the current time, as Discord's do."""
    now_ms = int(time.time() * 1000)
    return ((now_ms - DISCORD_EPOCH_MS) << 22) | (next(_counter) % (1 << 22))


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard that receives a guild's events (Discord's formula)."""
    return (guild_id >> 22) % shard_count


def snowflake_on_shard(shard_id: int, shard_count: int) -> int:
    """A fresh id whose guild would belong to `shard_id` of `shard_count`: its timestamp
    is moved on by at most `shard_count - 1` ms."""
    base = snowflake()
    step = (shard_id - shard_of(base, shard_count)) % shard_count
    return base + (step << 22)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def user(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def member(user_payload: Json, *, permissions: int | None = None) -> Json:
    out: Json = {
        "user": user_payload,
        "nick": None,
        "roles": [],
        "joined_at": now_iso(),
        "deaf": False,
        "mute": False,
        "flags": 0,
    }
    if permissions is not None:  # interaction members carry their resolved permissions
        out["permissions"] = str(permissions)
    return out


@dataclass
class FakeUser:
    id: int
    name: str
    locale: str = "en-US"
    permissions: int = MEMBER_PERMISSIONS
    bot: bool = False

    def payload(self) -> Json:
        return user(self.id, self.name, bot=self.bot)


@dataclass
class FakeChannel:
    id: int
    guild_id: int
    name: str

    def payload(self) -> Json:
        return {
            "id": str(self.id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }


@dataclass
class FakeGuild:
    id: int
    name: str
    channels: list[FakeChannel] = field(default_factory=list)
    locale: str = "en-US"
    filesize_limit: int = DEFAULT_UPLOAD_LIMIT
    bot_permissions: int = BOT_PERMISSIONS  # the bot's role, beside @everyone's
    bot_role_id: int = field(default_factory=snowflake)

    @property
    def channel(self) -> FakeChannel:
        return self.channels[0]

    def channel_named(self, name: str) -> FakeChannel:
        return next(c for c in self.channels if c.name == name)

    def has_channel(self, channel_id: int) -> bool:
        return any(c.id == channel_id for c in self.channels)

    def payload(self, bot_user: Json) -> Json:
        everyone = {
            "id": str(self.id),
            "name": "@everyone",
            "color": 0,
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": 0,
            "permissions": str(MEMBER_PERMISSIONS),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        bot_role = {**everyone, "id": str(self.bot_role_id), "name": "Palicord", "managed": True}
        bot_role["permissions"] = str(self.bot_permissions)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "owner_id": str(snowflake()),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "features": [],
            "mfa_level": 0,
            "premium_tier": 0,
            "preferred_locale": self.locale,
            "nsfw_level": 0,
            "system_channel_id": None,
            "roles": [everyone, bot_role],
            "emojis": [],
            "stickers": [],
            "channels": [c.payload() for c in self.channels],
            "threads": [],
            "members": [{**member(bot_user), "roles": [bot_role["id"]]}],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "joined_at": now_iso(),
        }


def attachment(
    attachment_id: int,
    *,
    url: str,
    filename: str,
    size: int,
    content_type: str | None,
    width: int | None = None,
    height: int | None = None,
    description: str | None = None,
) -> Json:
    out: Json = {
        "id": str(attachment_id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
    }
    if description:  # alt text
        out["description"] = description
    if content_type is not None:
        out["content_type"] = content_type
    if width is not None and height is not None:
        out["width"] = width
        out["height"] = height
    return out


# Sticker format types (https://discord.com/developers/docs/resources/sticker).
STICKER_PNG, STICKER_APNG, STICKER_LOTTIE, STICKER_GIF = 1, 2, 3, 4


def sticker_item(sticker_id: int, name: str, format_type: int) -> Json:
    """A message's `sticker_items` entry."""
    return {"id": str(sticker_id), "name": name, "format_type": format_type}


def preview_embed(link: str, picture_url: str, *, width: int = 0, height: int = 0) -> Json:
    """The embed Discord adds for a link to a picture: type "image", its thumbnail the
    picture, `proxy_url` on Discord's media proxy (here: the fake CDN)."""
    media = {"url": link, "proxy_url": picture_url, "width": width, "height": height}
    return {"type": "image", "url": link, "thumbnail": media}


def message(
    message_id: int,
    *,
    channel_id: int,
    guild_id: int | None,
    author: Json,
    content: str = "",
    attachments: list[Json] | None = None,
    embeds: list[Json] | None = None,
    mentions: list[Json] | None = None,
    referenced: Json | None = None,
    flags: int = 0,
    extra: Json | None = None,
    sticker_items: list[Json] | None = None,
) -> Json:
    out: Json = {
        "id": str(message_id),
        "type": 19 if referenced is not None else 0,
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": now_iso(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": embeds or [],
        "pinned": False,
        "flags": flags,
        "components": [],
    }
    if sticker_items:
        out["sticker_items"] = sticker_items
    if guild_id is not None:
        out["guild_id"] = str(guild_id)
    if referenced is not None:
        out["message_reference"] = {
            "type": 0,
            "message_id": referenced["id"],
            "channel_id": referenced["channel_id"],
            "guild_id": referenced.get("guild_id"),
        }
        out["referenced_message"] = referenced
    if extra:
        out.update(extra)
    return out
