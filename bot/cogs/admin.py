"""/settings: per-server choices, for members with Manage Server."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs import language_autocomplete
from bot.guild_config import GuildConfig
from inference.errors import InvalidParameter
from inference.tasks import normalize_language

if TYPE_CHECKING:
    from bot.client import PalicordBot

_CHANNEL_RE = re.compile(r"<#(\d+)>|\b(\d{15,21})\b")
_EVERYWHERE = frozenset({"all", "any", "*", "everywhere", "none"})
_NOWHERE = frozenset({"none", "off", "no", "nowhere", "-"})
INTENT_NEEDED = (
    "Automatic alt text needs Discord's Message Content intent, which this bot's operator "
    "has not switched on: the Developer Portal (Bot → Message Content Intent) and the "
    "setting MESSAGE_CONTENT_INTENT=true. The channels are saved and start working then."
)


def parse_channels(text: str, guild: discord.Guild) -> frozenset[int]:
    """Channel mentions or ids in `text`; "all" means no restriction."""
    if text.strip().lower() in _EVERYWHERE:
        return frozenset()
    return _named_channels(text, guild, hint="Name channels like #general, or say `all`.")


def parse_alt_text_channels(text: str, guild: discord.Guild) -> frozenset[int]:
    """Channel mentions or ids in `text`; "none" or "off" turns the mode off (there is no
    "everywhere": automatic descriptions are something admins choose channel by channel)."""
    if text.strip().lower() in _NOWHERE:
        return frozenset()
    return _named_channels(text, guild, hint="Name channels like #art, or say `off`.")


def _named_channels(text: str, guild: discord.Guild, *, hint: str) -> frozenset[int]:
    ids = {int(a or b) for a, b in _CHANNEL_RE.findall(text)}
    if not ids:
        raise InvalidParameter(hint)
    unknown = [i for i in ids if guild.get_channel_or_thread(i) is None]
    if unknown:
        raise InvalidParameter("Some of those channels are not in this server.")
    return frozenset(ids)


def settings_embed(
    config: GuildConfig, operator_quota: int, *, content_intent: bool = True
) -> discord.Embed:
    channels = " ".join(f"<#{c}>" for c in sorted(config.channels)) or "all channels"
    alt_text = " ".join(f"<#{c}>" for c in sorted(config.alt_text_channels)) or "off"
    embed = discord.Embed(title="Palicord settings for this server")
    embed.add_field(name="Channels", value=channels, inline=False)
    embed.add_field(name="Daily quota", value=f"{config.quota(operator_quota)} images")
    embed.add_field(name="Default language", value=config.language or "each user's own")
    embed.add_field(name="Mention replies", value="on" if config.mention_replies else "off")
    embed.add_field(name="Automatic alt text", value=alt_text, inline=False)
    if config.alt_text_channels and not content_intent:
        embed.add_field(name="⚠️ Not active yet", value=INTENT_NEEDED, inline=False)
    return embed


class Admin(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot

    @app_commands.command(name="settings")
    @app_commands.guild_only()
    # Explicitly: the bot's defaults (bot.client) would otherwise add DMs back in.
    @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.describe(
        channels="Channels where I answer (#a #b), or `all`",
        daily_quota="Images this server may send per day (UTC)",
        language="Default answer language for users whose own I don't speak",
        mention_replies="Whether I answer when mentioned",
        alt_text_channels="Channels where I describe pictures posted without alt text, or `off`",
    )
    @app_commands.autocomplete(language=language_autocomplete)
    async def settings(  # noqa: PLR0917 (one parameter per slash-command option)
        self,
        interaction: discord.Interaction[PalicordBot],
        channels: str | None = None,
        daily_quota: app_commands.Range[int, 1, 1_000_000] | None = None,
        language: str | None = None,
        mention_replies: bool | None = None,
        alt_text_channels: str | None = None,
    ) -> None:
        """Show or change how I behave in this server (Manage Server)."""
        guild = interaction.guild
        assert guild is not None  # guild_only
        config = await self.bot.configs.get(guild.id)
        if channels is not None:
            config = replace(config, channels=parse_channels(channels, guild))
        if daily_quota is not None:
            config = replace(config, daily_quota=daily_quota)
        if language is not None:
            config = replace(config, language=normalize_language(language))
        if mention_replies is not None:
            config = replace(config, mention_replies=mention_replies)
        if alt_text_channels is not None:
            chosen = parse_alt_text_channels(alt_text_channels, guild)
            config = replace(config, alt_text_channels=chosen)
        await self.bot.configs.put(guild.id, config)
        s = self.bot.settings
        embed = settings_embed(config, s.guild_daily_quota, content_intent=s.message_content_intent)
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(Admin(bot))
