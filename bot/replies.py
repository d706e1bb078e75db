"""Where an answer goes and how it gets there: the reply address each job carries, the
edits of the progress message (kept current by `bot.progress`), and the final answer put
in its place.

Answers to slash commands and context menus edit the interaction's original response
through its webhook; once the token is too old (Discord keeps it 15 minutes) or refused,
the answer is posted in the channel instead, mentioning the user so it is not lost.
Mentions are answered by editing the bot's reply message. The address is kept in the
request's record in the queue (`inference.queue.records`), so any bot run, even one
started after the request was queued, can deliver it.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.utils import MISSING

from bot.answer import Answer
from inference.annotate import DISCORD_UPLOAD_LIMIT_BYTES
from inference.errors import MalformedMessage

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)

# Discord error codes meaning "this webhook/message is gone": fall back to the channel.
_GONE_CODES = frozenset({10008, 10015, 10062, 50027})


# --- the address ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Who asked where, the bot's progress message for the request (once there is one),
    and how to reach it again."""

    channel_id: int
    user_id: int
    guild_id: int | None
    message_id: int | None  # the message that shows progress and then the answer
    app_id: int | None = None  # interaction webhook: application id + token
    token: str | None = None
    issued_at: float = 0.0  # epoch seconds the interaction token was issued
    reply_to_id: int | None = None  # the user's message, for a mention
    # Largest file the answer may attach there: boosted guilds allow more than the default.
    upload_limit_bytes: int = DISCORD_UPLOAD_LIMIT_BYTES
    # A thread's parent, for the channel allow-list at intake (not kept in the record).
    parent_channel_id: int | None = None

    @property
    def is_interaction(self) -> bool:
        return self.app_id is not None and self.token is not None

    def to_fields(self) -> dict[str, str]:
        """The address as the request's record keeps it (`inference.queue.records`; the
        field names are the previous release's job context's, which an upgrade reads)."""
        out = {"ch": str(self.channel_id), "u": str(self.user_id)}
        out["ul"] = str(self.upload_limit_bytes)
        optional = {
            "g": self.guild_id,
            "mid": self.message_id,
            "app": self.app_id,
            "tok": self.token,
            "at": self.issued_at if self.is_interaction else None,
            "ref": self.reply_to_id,
        }
        out.update({k: str(v) for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ReplyAddress:
        """Inverse of `to_fields`; raises MalformedMessage on anything else."""

        def opt_int(key: str) -> int | None:
            return int(fields[key]) if fields.get(key) else None

        try:
            return cls(
                channel_id=int(fields["ch"]),
                user_id=int(fields["u"]),
                guild_id=opt_int("g"),
                message_id=opt_int("mid"),
                app_id=opt_int("app"),
                token=fields.get("tok") or None,
                issued_at=float(fields.get("at") or 0.0),
                reply_to_id=opt_int("ref"),
                upload_limit_bytes=opt_int("ul") or DISCORD_UPLOAD_LIMIT_BYTES,
            )
        except (KeyError, ValueError) as exc:
            raise MalformedMessage("A request's reply address is incomplete.") from exc


def interaction_address(
    interaction: discord.Interaction[PalicordBot], message_id: int | None = None
) -> ReplyAddress:
    """Where an interaction's answer goes: its original response, via its token."""
    assert interaction.channel_id is not None
    return ReplyAddress(
        parent_channel_id=getattr(interaction.channel, "parent_id", None),
        channel_id=interaction.channel_id,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        message_id=message_id,
        app_id=interaction.application_id,
        token=interaction.token,
        issued_at=interaction.created_at.timestamp() if interaction.created_at else time.time(),
        upload_limit_bytes=interaction.filesize_limit,
    )


# --- posting and editing ---------------------------------------------------------------


def _gone(exc: discord.HTTPException) -> bool:
    return exc.status in (401, 404) or exc.code in _GONE_CODES


class Replies:
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
        self,
        address: ReplyAddress,
        *,
        content: str | None,
        answer: Answer | None = None,
        buttons: discord.ui.View | None = None,
    ) -> None:
        embeds = list(answer.embeds) if answer else []
        files = answer.discord_files() if answer else []
        # The final answer's buttons replace the progress message's (None: none at all); a
        # progress edit sets its Cancel button, or leaves the components alone.
        view: discord.ui.View | None = MISSING if buttons is None else buttons
        if answer is not None:
            view = answer.view
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
                view=view,
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
            view=view,
        )

    async def show_progress(
        self, address: ReplyAddress, text: str, buttons: discord.ui.View | None = None
    ) -> bool:
        """Replace the progress message's text (and its buttons, given some); False if
        Discord refused (never raises)."""
        if address.message_id is None:
            return False
        if address.is_interaction and not self._token_fresh(address):
            return False
        try:
            await self._edit(address, content=text, buttons=buttons)
        except discord.HTTPException as exc:
            log.info("progress edit refused: HTTP %s code %s", exc.status, exc.code)
            return False
        return True

    async def deliver(self, address: ReplyAddress, answer: Answer) -> bool:
        """Put `answer` in place of the progress message, else post it in the channel. True
        once Discord confirmed it, False when Discord refused it for good (the channel is
        closed to the bot); any other failure (a connection error, a timeout, Discord's
        5xx) raises, to be tried again. Trying again never shows a second answer: an edit
        is idempotent, and a channel post carries a nonce Discord enforces."""
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
                view=answer.view if answer.view is not None else MISSING,
                # One progress message per request: its id names this answer, so a post
                # repeated after a lost confirmation is the same message (enforce_nonce).
                nonce=address.message_id or secrets.randbits(63),
            )
        except discord.HTTPException as exc:
            if exc.status >= 500:
                raise  # Discord's trouble, not a refusal: try again later
            log.warning("could not post an answer in the channel: HTTP %s", exc.status)
            return False
        return True
