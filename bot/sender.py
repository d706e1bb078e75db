"""Show progress and deliver answers at a ReplyAddress, from any bot run.

Answers to slash commands and context menus edit the interaction's original response
through its webhook; once the token is too old (Discord keeps it 15 minutes) or refused,
the answer is posted in the channel instead, mentioning the user so it is not lost.
Mentions are answered by editing the bot's reply message.
"""

from __future__ import annotations

import logging
import time

import discord

from bot.address import ReplyAddress
from bot.answer import Answer

log = logging.getLogger(__name__)

# Discord error codes meaning "this webhook/message is gone": fall back to the channel.
_GONE_CODES = frozenset({10008, 10015, 10062, 50027})


def _gone(exc: discord.HTTPException) -> bool:
    return exc.status in (401, 404) or exc.code in _GONE_CODES


class Sender:
    """Edits progress messages and delivers final answers."""

    def __init__(self, client: discord.Client, *, token_ttl_s: float) -> None:
        self._client = client
        self._token_ttl_s = token_ttl_s

    def _token_fresh(self, address: ReplyAddress) -> bool:
        return address.is_interaction and time.time() - address.issued_at < self._token_ttl_s

    def _webhook(self, address: ReplyAddress) -> discord.Webhook:
        assert address.app_id is not None and address.token is not None
        return discord.Webhook.partial(address.app_id, address.token, client=self._client)

    async def _edit(
        self, address: ReplyAddress, *, content: str | None, answer: Answer | None = None
    ) -> None:
        embeds = list(answer.embeds) if answer else []
        files = answer.discord_files() if answer else []
        message_id = address.message_id
        if message_id is None:
            raise ValueError("this address has no message to edit")
        if address.is_interaction:
            await self._webhook(address).edit_message(
                message_id,
                content=content,
                embeds=embeds,
                attachments=files,
                allowed_mentions=discord.AllowedMentions.none(),
            )
            return
        channel = self._client.get_partial_messageable(
            address.channel_id, guild_id=address.guild_id
        )
        await channel.get_partial_message(message_id).edit(
            content=content,
            embeds=embeds,
            attachments=files,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def show_progress(self, address: ReplyAddress, text: str) -> bool:
        """Replace the progress message's text; False if Discord refused (never raises)."""
        if address.message_id is None:
            return False
        if address.is_interaction and not self._token_fresh(address):
            return False
        try:
            await self._edit(address, content=text)
        except discord.HTTPException as exc:
            log.info("progress edit refused: HTTP %s code %s", exc.status, exc.code)
            return False
        return True

    async def deliver(self, address: ReplyAddress, answer: Answer) -> bool:
        """Put `answer` in place of the progress message, else post it in the channel."""
        if address.message_id is not None and (
            self._token_fresh(address) or not address.is_interaction
        ):
            try:
                await self._edit(address, content=answer.content or None, answer=answer)
                return True
            except discord.HTTPException as exc:
                if not _gone(exc) and exc.status < 500:
                    log.warning("answer edit refused: HTTP %s code %s", exc.status, exc.code)
                log.info("answer edit failed (HTTP %s); posting in the channel", exc.status)
        return await self._post_in_channel(address, answer)

    async def _post_in_channel(self, address: ReplyAddress, answer: Answer) -> bool:
        channel = self._client.get_partial_messageable(
            address.channel_id, guild_id=address.guild_id
        )
        reference = None
        if address.reply_to_id is not None:
            reference = discord.MessageReference(
                message_id=address.reply_to_id,
                channel_id=address.channel_id,
                fail_if_not_exists=False,
            )
        # The one ping this bot ever makes: the person whose answer this is.
        content = f"<@{address.user_id}> here is your answer."
        if answer.content:
            content += "\n" + answer.content
        try:
            await channel.send(
                content=content,
                embeds=list(answer.embeds),
                files=answer.discord_files(),
                reference=reference,  # type: ignore[arg-type]
                allowed_mentions=discord.AllowedMentions(
                    everyone=False, roles=False, users=[discord.Object(address.user_id)]
                ),
            )
        except discord.HTTPException as exc:
            log.warning("could not post an answer in the channel: HTTP %s", exc.status)
            return False
        return True
