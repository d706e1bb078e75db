"""The buttons on an automatic description, for the poster only: **Repost with alt text**
(the poster's message again, through a channel webhook under their name and avatar, each
picture with its description as real alt text; then the original deleted where the bot
may, and the reply removed) and **Remove** (the reply goes). Everything a press needs is
in its `custom_id` and in Redis (`AltTextStore`), so both work after a restart."""

from __future__ import annotations

import contextlib
import logging
import re
from io import BytesIO
from typing import TYPE_CHECKING, Any

import discord

from bot.alt_text import AltTextStore, fits_upload, gone_marker, repost_refusal, wanting_alt_text
from bot.answer import MESSAGE_LIMIT
from bot.errors import ReportsErrors

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)

PREFIX = "palicord:alt"
TEMPLATE = rf"{PREFIX}:(?P<action>repost|remove):(?P<poster>\d{{1,20}}):(?P<message>\d{{1,20}})"
WEBHOOK_NAME = "Palicord alt text"
LABELS = {"repost": "Repost with alt text", "remove": "Remove"}
ONLY_THE_POSTER = {
    "repost": "Only the person who posted the picture can re-post it with alt text.",
    "remove": "Only the person who posted the picture can remove its description.",
}
EXPIRED = "This description is too old to re-post now; you can still add alt text yourself."
TOO_LARGE = "These files are larger than this server's upload limit: I cannot re-post them."
GONE = "The original message is gone, so there is nothing to re-post."
ALREADY = "This message is being re-posted already."


def alt_text_view(poster_id: int, message_id: int, *, repost: bool) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if repost:
        view.add_item(AltTextButton("repost", poster_id, message_id))
    view.add_item(AltTextButton("remove", poster_id, message_id))
    return view


class AltTextButton(
    ReportsErrors, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE
):
    """One of the two buttons of one description."""

    def __init__(self, action: str, poster_id: int, message_id: int) -> None:
        style = discord.ButtonStyle.primary if action == "repost" else discord.ButtonStyle.secondary
        custom_id = f"{PREFIX}:{action}:{poster_id}:{message_id}"
        super().__init__(discord.ui.Button(label=LABELS[action], style=style, custom_id=custom_id))
        self.action, self.poster_id, self.message_id = action, poster_id, message_id
        self.what = f"alt-text button {action}"

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> AltTextButton:
        return cls(match["action"], int(match["poster"]), int(match["message"]))

    async def press(self, interaction: discord.Interaction[PalicordBot]) -> None:
        if interaction.user.id != self.poster_id:
            await interaction.response.send_message(ONLY_THE_POSTER[self.action], ephemeral=True)
            return
        bot = interaction.client
        store = AltTextStore(bot.redis, bot.queue.keys)
        if self.action == "remove":
            await interaction.response.defer()
            await self._remove_reply(interaction, store)
        else:
            await self._repost(interaction, store)

    async def _remove_reply(
        self, interaction: discord.Interaction[PalicordBot], store: AltTextStore
    ) -> None:
        assert interaction.channel_id is not None
        await store.swap(self.message_id, gone_marker(interaction.channel_id, self.poster_id))
        if interaction.message is not None:
            with contextlib.suppress(discord.NotFound):
                await interaction.message.delete()

    async def _repost(
        self, interaction: discord.Interaction[PalicordBot], store: AltTextStore
    ) -> None:
        channel, guild = interaction.channel, interaction.guild
        refusal = repost_refusal(channel, guild.me if guild else None)
        if refusal is not None:
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        assert isinstance(channel, discord.TextChannel) and guild is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        # The private "thinking…" message becomes the outcome.
        say = interaction.edit_original_response
        if not await store.begin_repost(self.message_id):
            await say(content=ALREADY)
            return
        try:
            await self._repost_once(interaction, store, channel, guild)
        finally:
            await store.end_repost(self.message_id)

    async def _repost_once(
        self,
        interaction: discord.Interaction[PalicordBot],
        store: AltTextStore,
        channel: discord.TextChannel,
        guild: discord.Guild,
    ) -> None:
        say = interaction.edit_original_response
        posted = await store.get(self.message_id)
        if posted is None or posted.gone or not posted.alt_texts:
            await say(content=EXPIRED)
            return
        try:
            original = await channel.fetch_message(self.message_id)
        except discord.NotFound:
            await say(content=GONE)
            return
        if not fits_upload(original.attachments, guild.filesize_limit):
            await say(content=TOO_LARGE)
            return
        # The pictures that were described, in the order their descriptions were stored.
        wanting = wanting_alt_text(original, len(original.attachments))
        alts = {a.id: alt for a, alt in zip(wanting, posted.alt_texts, strict=False) if alt}
        files = [
            discord.File(
                BytesIO(await a.read()),
                filename=a.filename,
                description=alts.get(a.id, a.description),
                spoiler=a.is_spoiler(),
            )
            for a in original.attachments
        ]
        webhook = await self._webhook(channel, guild.me)
        author = original.author
        await webhook.send(
            content=original.content[:MESSAGE_LIMIT],
            username=author.display_name[:80],
            avatar_url=author.display_avatar.url,
            files=files,
            allowed_mentions=discord.AllowedMentions.none(),
            wait=True,
        )
        deleted = False
        if channel.permissions_for(guild.me).manage_messages:
            with contextlib.suppress(discord.HTTPException):
                await original.delete()
                deleted = True
        await self._remove_reply(interaction, store)
        note = "Re-posted with alt text."
        if not deleted:
            note += " I may not delete messages here: you can delete your original yourself."
        await say(content=note)

    async def _webhook(self, channel: discord.TextChannel, me: discord.Member) -> discord.Webhook:
        """The channel's webhook this bot made for re-posts, made once."""
        for hook in await channel.webhooks():
            if hook.user is not None and hook.user.id == me.id and hook.name == WEBHOOK_NAME:
                return hook
        return await channel.create_webhook(name=WEBHOOK_NAME, reason="Re-posts with alt text")
