"""Errors only the Discord front end raises; they extend `inference.errors`' tree.

    PalicordError
    ├── ImageError
    │   ├── AttachmentHostNotAllowed   the URL is not on an allowed attachment host
    │   ├── LinkHostNotAllowed         a link off IMAGE_LINK_HOSTS, and no preview of it
    │   ├── LinkAddressNotPublic       a link's host resolves to a private address
    │   ├── VectorSticker              a Lottie sticker: no picture to read
    │   ├── DownloadFailed             the host did not give us the file
    │   └── (PictureExpired, in inference.errors: the queue refuses a job without one)
    ├── RequestError
    │   ├── NoImageFound               nothing to look at
    │   ├── ChannelNotAllowed          /settings keeps the bot out of this channel
    │   ├── NotAllowed                 the user lacks a permission (e.g. Manage Server)
    │   ├── NotRequester               a Cancel pressed by someone else than who asked
    │   └── TooLateToCancel            a Cancel pressed once nothing was left to cancel
    └── QueueError
        ├── CooldownActive             the same user again, too soon
        ├── DailyQuotaReached          the guild, or the person, used today's quota
        └── BotRestarted               the bot died between acknowledging and queueing

Every message is fit to show the user as it is; `user_message` maps anything else
(discord.py's own errors included) to a short, safe line, and `report_error` is the one
way any of them reaches a user (called from discord.py's error hooks: the command tree's,
the modals', the buttons', and from the mention handler).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands

from bot.answer import duration_text
from inference.errors import ImageError, PalicordError, QueueError, RequestError

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)


class AttachmentHostNotAllowed(ImageError):
    code = "image_host"
    default_message = "I only read images uploaded to Discord itself, not links to other sites."


class LinkHostNotAllowed(ImageError):
    code = "link_host"
    default_message = (
        "I can't open that link, and Discord showed no preview picture for it. "
        "Attach the picture instead."
    )

    @classmethod
    def naming(cls, hosts: tuple[str, ...]) -> LinkHostNotAllowed:
        """The refusal that lists the hosts links may point to (IMAGE_LINK_HOSTS)."""
        if not hosts:
            return cls()
        return cls(
            "I only open picture links to "
            + ", ".join(hosts)
            + "; for other sites I use Discord's preview picture, and that link has none. "
            "Attach the picture instead."
        )


class LinkAddressNotPublic(ImageError):
    code = "link_address"
    default_message = "That link points to a private network address; I don't open those."


class VectorSticker(ImageError):
    code = "vector_sticker"
    default_message = (
        "I can't read vector stickers (Lottie animations); PNG, APNG and GIF stickers work."
    )


class DownloadFailed(ImageError):
    code = "image_download"
    default_message = "I couldn't download that image from Discord. Please try again."


class NoImageFound(RequestError):
    code = "no_image"
    default_message = (
        "I don't see an image. Attach one (or reply to a message that has one) and mention me."
    )


class ChannelNotAllowed(RequestError):
    code = "channel_not_allowed"
    default_message = "I'm not enabled in this channel; ask a server admin about /settings."


class NotAllowed(RequestError):
    code = "not_allowed"
    default_message = "You need the Manage Server permission for that."


class NotRequester(RequestError):
    code = "not_requester"
    default_message = "Only the person who asked can cancel this."


class TooLateToCancel(RequestError):
    code = "too_late_to_cancel"
    default_message = "It's too late to cancel that: it has been answered or cancelled already."


class CooldownActive(QueueError):
    code = "cooldown"
    default_message = "Please wait a few seconds between requests."

    @classmethod
    def after(cls, retry_in_s: float) -> CooldownActive:
        return cls(f"Please wait {max(1, round(retry_in_s))} s before your next request.")


class DailyQuotaReached(QueueError):
    code = "daily_quota"
    default_message = "This server has used up today's image quota. It resets at midnight UTC."

    @classmethod
    def for_server(cls, quota: int, resets_in_s: float) -> DailyQuotaReached:
        return cls(
            f"This server has used up today's quota of {quota} images. It resets at "
            f"midnight UTC, {_in(resets_in_s)}."
        )

    @classmethod
    def for_person(cls, quota: int, resets_in_s: float) -> DailyQuotaReached:
        return cls(
            f"You have used up your own quota of {quota} images for today (counted across "
            f"every server and DM). It resets at midnight UTC, {_in(resets_in_s)}."
        )


def _in(seconds: float) -> str:
    """'in 3 h 12 min' / 'in 5 min': when a limit frees up, roughly."""
    return "in " + duration_text(seconds)


class BotRestarted(QueueError):
    code = "bot_restarted"
    default_message = (
        "I restarted while taking this request, so it was not queued. Please send it again."
    )


def user_message(exc: BaseException) -> str:
    """The short line to show a user for `exc`; never leaks internals."""
    if isinstance(exc, PalicordError):
        return exc.message
    return PalicordError.default_message


def _cause(error: BaseException) -> BaseException:
    """What went wrong, without discord.py's wrapping."""
    if isinstance(error, app_commands.MissingPermissions):
        return NotAllowed()
    if isinstance(error, app_commands.CommandInvokeError):
        return error.original
    return error


async def report_error(
    where: discord.Interaction[PalicordBot] | discord.Message,
    error: BaseException,
    *,
    what: str,
    reply: discord.Message | None = None,
) -> bool:
    """Tell the user what went wrong: privately for an interaction, whether or not it was
    deferred; for a mention, in the bot's `reply` (edited) or a new reply to `where`.
    Anything but a PalicordError is a bug, logged here as `what` failing. False when
    Discord did not take the message."""
    cause = _cause(error)
    if not isinstance(cause, PalicordError):
        log.error("%s failed", what, exc_info=cause)
    text = "⚠️ " + user_message(cause)
    try:
        if isinstance(where, discord.Message):
            if reply is not None:
                await reply.edit(content=text, view=None)  # no Cancel on an error
            else:
                await where.reply(text, mention_author=False)
        elif where.response.is_done():
            # A deferred response is public; drop it so the error can be private.
            with contextlib.suppress(discord.HTTPException):
                await where.delete_original_response()
            await where.followup.send(text, ephemeral=True)
        else:
            await where.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("could not report an error to the user: HTTP %s", exc.status)
        return False
    return True


class ReportsErrors:
    """Mixed into each of the bot's dynamic items (its persistent buttons), ahead of
    `discord.ui.DynamicItem`. discord.py (2.7) only logs what a dynamic item's callback
    raises (no `View.on_error` sees it), so the callback runs the button's `press` here and
    sends what it raises through `report_error`, like every other error. `what` names the
    button in the log."""

    what = "button"

    async def press(self, interaction: discord.Interaction[PalicordBot]) -> None:
        raise NotImplementedError

    # Typed as discord.py types it (any client); this bot's items only see its own.
    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        ours = cast("discord.Interaction[PalicordBot]", interaction)
        try:
            await self.press(ours)
        except Exception as exc:
            await report_error(ours, exc, what=self.what)
