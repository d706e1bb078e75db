"""What people do in the fake Discord: post messages, run slash commands and context menus,
submit modals. Each action goes to the bot over the gateway exactly as Discord sends it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from sandbox.discord import interactions as ix
from sandbox.discord import payloads as p
from sandbox.discord.recorder import Recorded
from sandbox.discord.server import FakeDiscord

# Discord adds a link's preview a moment after the message (a MESSAGE_UPDATE).
UNFURL_DELAY_S = 0.5


class DiscordServer(FakeDiscord):
    """FakeDiscord plus the user-side actions tests drive it with."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._unfurls: set[asyncio.Task[None]] = set()

    def user(
        self, name: str, *, locale: str = "en-US", admin: bool = False, user_id: int | None = None
    ) -> p.FakeUser:
        perms = p.ADMIN_PERMISSIONS if admin else p.MEMBER_PERMISSIONS
        return p.FakeUser(user_id or p.snowflake(), name, locale=locale, permissions=perms)

    def dm_channel(self, user: p.FakeUser) -> p.FakeChannel:
        """The user's direct-message channel with the bot (one per user, as on Discord)."""
        if user.id not in self._dms:
            self._dms[user.id] = p.FakeChannel(p.snowflake(), 0, "dm")
        return self._dms[user.id]

    def attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = "image/png",
        *,
        size: int | None = None,
        url: str | None = None,
        width: int | None = None,
        height: int | None = None,
        description: str | None = None,
    ) -> p.Json:
        """Put `data` on the CDN and describe it (`description`: its alt text); `size`/`url`
        may lie, as a test requires."""
        served = self.add_cdn_file(data, filename, content_type or "")
        return p.attachment(
            p.snowflake(),
            url=url or served,
            filename=filename,
            size=len(data) if size is None else size,
            content_type=content_type,
            width=width,
            height=height,
            description=description,
        )

    def sticker(self, data: bytes, name: str, format_type: int = p.STICKER_PNG) -> p.Json:
        """A sticker served where Discord's CDN keeps it; returns its `sticker_items`
        entry for `post_message`."""
        sticker_id = p.snowflake()
        if format_type == p.STICKER_LOTTIE:
            self.cdn.put(f"stickers/{sticker_id}.json", data, "application/json")
        else:
            extension = "gif" if format_type == p.STICKER_GIF else "png"
            self.cdn.put(f"stickers/{sticker_id}.{extension}", data, f"image/{extension}")
        return p.sticker_item(sticker_id, name, format_type)

    def emoji(self, data: bytes, name: str, *, animated: bool = False) -> str:
        """A custom emoji served where Discord's CDN keeps it; returns its markup for a
        message's content (`<:name:id>`, `<a:name:id>`)."""
        emoji_id = p.snowflake()
        extension = "gif" if animated else "png"
        self.cdn.put(f"emojis/{emoji_id}.{extension}", data, f"image/{extension}")
        return f"<{'a' if animated else ''}:{name}:{emoji_id}>"

    def link_preview(self, link: str, data: bytes, content_type: str) -> p.Json:
        """The preview embed Discord makes for a link to this picture: a copy of it on
        Discord's media proxy (here, the CDN's `external/`)."""
        name = urlsplit(link).path.rsplit("/", 1)[-1] or "picture"
        proxied = self.cdn.put(f"external/{p.snowflake()}/{name}", data, content_type)
        return p.preview_embed(link, proxied)

    async def add_preview(self, message: p.Json, embed: p.Json) -> p.Json:
        """Discord unfurls a link a moment after the message: the embed is added and the
        whole message sent again as MESSAGE_UPDATE."""
        current = self.messages.get(int(message["id"]), message)
        current["embeds"] = [*current.get("embeds", []), embed]
        await self.gateway.dispatch("MESSAGE_UPDATE", current)
        return current

    def add_previews_later(self, message: p.Json, embeds: list[p.Json]) -> None:
        """`add_preview` for each embed after UNFURL_DELAY_S, as Discord does."""

        async def later() -> None:
            await asyncio.sleep(UNFURL_DELAY_S)
            for embed in embeds:
                await self.add_preview(message, embed)

        task = asyncio.create_task(later())
        self._unfurls.add(task)
        task.add_done_callback(self._unfurls.discard)

    async def post_message(
        self,
        author: p.FakeUser,
        content: str = "",
        *,
        attachments: list[p.Json] | tuple[p.Json, ...] = (),
        mention_bot: bool = False,
        reply_to: p.Json | None = None,
        guild: p.FakeGuild | None = None,
        embeds: list[p.Json] | tuple[p.Json, ...] = (),
        stickers: list[p.Json] | tuple[p.Json, ...] = (),
        channel: p.FakeChannel | None = None,
    ) -> p.Json:
        """A user posts a message in `channel` (by default the guild's first) (with the
        preview `embeds` Discord already made, and `stickers` from `sticker`); it is
        dispatched as MESSAGE_CREATE."""
        guild = guild or self.guild
        channel = channel or guild.channel
        mentions = []
        if mention_bot:
            content = f"<@{self.bot_user.id}> {content}".strip()
            mentions.append(
                {**self.bot_user.payload(), "member": p.member(self.bot_user.payload())}
            )
        msg = p.message(
            p.snowflake(),
            channel_id=channel.id,
            guild_id=guild.id,
            author=author.payload(),
            content=content,
            attachments=list(attachments),
            embeds=list(embeds),
            mentions=mentions,
            referenced=reply_to,
            sticker_items=list(stickers),
        )
        self.messages[int(msg["id"])] = msg
        event = {
            **msg,
            "member": {k: v for k, v in p.member(author.payload()).items() if k != "user"},
        }
        await self.gateway.dispatch("MESSAGE_CREATE", event)
        return msg

    async def delete_message(self, message: p.Json) -> bool:
        """Someone deletes a message (MESSAGE_DELETE); False if it was gone already."""
        return await self._messages.delete(int(message["id"]))

    async def edit_message(
        self,
        message: p.Json,
        *,
        content: str | None = None,
        attachments: list[p.Json] | None = None,
    ) -> p.Json:
        """The author edits their message (new text, or attachments kept or removed, with
        their alt text): MESSAGE_UPDATE with the whole message, as Discord sends it."""
        current = self.messages.get(int(message["id"]), message)
        if content is not None:
            current["content"] = content
        if attachments is not None:
            current["attachments"] = attachments
        current["edited_timestamp"] = p.now_iso()
        await self.gateway.dispatch("MESSAGE_UPDATE", current)
        return current

    def channel_of(self, message: p.Json) -> tuple[p.FakeGuild, p.FakeChannel]:
        channel_id = int(message["channel_id"])
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return guild, channel
        raise AssertionError(f"no guild channel {channel_id}")

    async def _dispatch_interaction(self, state: ix.InteractionState, payload: p.Json) -> None:
        self.interactions[state.token] = state
        await self.gateway.dispatch("INTERACTION_CREATE", payload)

    async def slash(
        self,
        name: str,
        *,
        user: p.FakeUser,
        guild: p.FakeGuild | None = None,
        attachments: dict[str, p.Json] | None = None,
        dm: bool = False,
        channel: p.FakeChannel | None = None,
        **options: Any,
    ) -> ix.InteractionState:
        """A user runs `/name` with `options` (attachments by option name), in a guild's
        `channel` (by default its first) or (`dm`) in their direct messages with the bot."""
        where = None if dm else guild or self.guild
        state, payload = ix.slash_payload(
            app_id=self.app_id,
            command=self.command(name),
            options={k: v for k, v in options.items() if v is not None},
            attachments=attachments or {},
            user=user,
            guild=where,
            channel=self.dm_channel(user) if where is None else channel or where.channel,
        )
        await self._dispatch_interaction(state, payload)
        return state

    async def autocomplete(
        self,
        name: str,
        focused: str,
        *,
        user: p.FakeUser,
        guild: p.FakeGuild | None = None,
        timeout_s: float = 3.0,
        **options: Any,
    ) -> list[p.Json]:
        """What the bot suggests while `user` types option `focused` of `/name`."""
        guild = guild or self.guild
        state, payload = ix.slash_payload(
            app_id=self.app_id,
            command=self.command(name),
            options={k: v for k, v in options.items() if v is not None},
            attachments={},
            user=user,
            guild=guild,
            channel=guild.channel,
            focused=focused,
        )
        await self._dispatch_interaction(state, payload)
        await self.wait_for_callback(state, timeout_s=timeout_s)
        data = (state.callback or {}).get("data") or {}
        return list(data.get("choices") or [])

    async def message_command(
        self, name: str, target: p.Json, *, user: p.FakeUser, guild: p.FakeGuild | None = None
    ) -> ix.InteractionState:
        """A user picks Apps → `name` on message `target`, where it is."""
        guild = guild or self.guild
        if target.get("guild_id"):
            guild, channel = self.channel_of(target)
        else:
            channel = guild.channel
        state, payload = ix.message_command_payload(
            app_id=self.app_id,
            command=self.command(name, kind=ix.MESSAGE_COMMAND),
            target=target,
            user=user,
            guild=guild,
            channel=channel,
        )
        await self._dispatch_interaction(state, payload)
        return state

    async def press(
        self, message: p.Json, label: str, *, user: p.FakeUser, guild: p.FakeGuild | None = None
    ) -> ix.InteractionState:
        """A user presses the button labelled `label` (or with that custom_id) on `message`,
        as it stands now on the server."""
        current = self.messages.get(int(message["id"]), message)
        found = ix.buttons(current)
        custom_id = found.get(label) or (label if label in found.values() else None)
        if custom_id is None:
            raise AssertionError(f"no button {label!r} on that message; it has {list(found)}")
        if current.get("guild_id"):  # pressed where the message is
            guild, channel = self.channel_of(current)
        else:
            guild = guild or self.guild
            channel = guild.channel
        state, payload = ix.component_payload(
            app_id=self.app_id,
            message=current,
            custom_id=custom_id,
            user=user,
            guild=guild,
            channel=channel,
        )
        await self._dispatch_interaction(state, payload)
        return state

    async def submit_modal(
        self, parent: ix.InteractionState, values: dict[str, str]
    ) -> ix.InteractionState:
        """The user fills in the modal the bot opened for `parent` and submits it."""
        state, payload = ix.modal_submit_payload(app_id=self.app_id, parent=parent, values=values)
        await self._dispatch_interaction(state, payload)
        return state

    def expire(self, state: ix.InteractionState) -> None:
        """Make the interaction's token invalid, as Discord does after 15 minutes."""
        state.expired = True

    # --- assertions helpers ------------------------------------------------------------

    async def wait_for_callback(
        self, state: ix.InteractionState, *, timeout_s: float = 5.0
    ) -> Recorded:
        [rec] = await self.recorder.wait_for(
            lambda r: r.route.endswith("/callback") and r.params.get("token") == state.token,
            timeout_s=timeout_s,
        )
        return rec

    def sent_for(self, state: ix.InteractionState) -> list[Recorded]:
        """Every webhook request (follow-ups and edits) made with this interaction's token."""
        return self.recorder.matching(
            lambda r: r.route.startswith("/webhooks/") and r.params.get("token") == state.token
        )

    def channel_posts(self, *, since: int = 0) -> list[Recorded]:
        return self.recorder.matching(
            lambda r: r.key == "POST /channels/{channel_id}/messages", since=since
        )
