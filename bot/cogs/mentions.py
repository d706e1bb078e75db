"""Mention the bot with images, or reply with a mention to a message that has them, or to
one of the bot's answers (a follow-up on the same pictures, see `bot.followups`)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.download import ImageRef
from bot.errors import report_error
from bot.events import in_time, run_mention
from bot.followups import digests_of
from bot.pictures import question_text
from bot.requests import Ask
from inference.errors import PalicordError
from inference.tasks import Task

if TYPE_CHECKING:
    from bot.client import PalicordBot

log = logging.getLogger(__name__)

_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ARTICLE_RE = re.compile(r"(?i)(?:^|(?<=[;,]))\s*(?:the|an|a)\s+")
_KEYWORDS = {
    "detect": Task.DETECT,
    "segment": Task.SEGMENT,
    "describe": Task.DESCRIBE,
    "caption": Task.CAPTION,
    "ocr": Task.OCR,
    "read": Task.OCR,
}


def strip_mentions(text: str, bot_id: int) -> str:
    """The message without the bot's own mention(s), whitespace collapsed."""
    cleaned = _MENTION_RE.sub(lambda m: "" if int(m.group(1)) == bot_id else m.group(0), text)
    return " ".join(cleaned.split())


def parse_mention(text: str, bot_id: int) -> Ask:
    """No text: caption. `detect a ; b`: detection, `segment a ; b`: masks (a leading
    "the", "a" or "an" dropped: "segment the cat"). `describe`: a long description.
    `ocr` / `read`: the text. `caption`: a caption. Anything else: a question."""
    rest = strip_mentions(text, bot_id)
    if not rest:
        return Ask(Task.CAPTION)
    word, _, tail = rest.partition(" ")
    task = _KEYWORDS.get(word.lower().rstrip(":,"))
    if task in (Task.DETECT, Task.SEGMENT):
        # PaliGemma's prompts name the objects bare; people write "the cat".
        return Ask(task, objects=_ARTICLE_RE.sub("", tail))
    if task is not None:
        return Ask(task)
    return Ask(Task.ANSWER, question=rest)


class Mentions(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot

    async def _replied_to(self, message: discord.Message) -> discord.Message | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        try:
            return await message.channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or message.author.bot or not message.mentions:
            return
        if not any(u.id == me.id for u in message.mentions):
            return
        try:
            await self._answer(message, me.id)
        except Exception as exc:  # the mention handler's error hook
            await report_error(message, exc, what="mention")

    async def _answer(self, message: discord.Message, me_id: int) -> None:
        guild_id = message.guild.id if message.guild else None
        try:
            config = await in_time(self.bot.configs.get(guild_id))
        except PalicordError:
            config = None  # Redis is away: run_mention tells the user
        if config is not None and not config.mention_replies:
            return
        if config is not None and not config.allows_channel(
            message.channel.id, getattr(message.channel, "parent_id", None)
        ):
            return  # a silent no: admins limited the bot to other channels
        images = await self.bot.pictures.find_waiting(self.bot, message)
        if not images:
            replied = await self._replied_to(message)
            if replied is not None and replied.author.id == me_id:
                # A reply to one of our answers: the pictures it was about, as kept.
                images = [ImageRef.stored_picture(d) for d in digests_of(replied)]
            elif replied is not None:
                images = self.bot.pictures.find(replied)
        # Links and custom emoji are pictures, not part of the question.
        ask = parse_mention(question_text(message.content), me_id)
        await run_mention(self.bot.requests, message, images, ask)


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Mentions(bot))
