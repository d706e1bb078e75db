"""/queue: your requests and their place in line, workers online, the typical wait."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.answer import duration_text
from inference.queue import JobState, JobStatus

if TYPE_CHECKING:
    from bot.client import PalicordBot

MAX_LISTED = 10


def describe_status(status: JobStatus) -> str:
    if status.state is JobState.QUEUED:
        if not status.place:
            return "in line"
        return f"#{status.place} in line" if status.exact else f"about #{status.place} in line"
    if status.state is JobState.RUNNING:
        return "being answered now"
    return status.state.value


def format_wait(seconds: float | None) -> str:
    return "not known yet" if seconds is None else "about " + duration_text(seconds)


class QueueStatus(commands.Cog):
    def __init__(self, bot: PalicordBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction[PalicordBot]) -> None:
        """Show your requests in line, the workers online and the typical wait."""
        queue = self.bot.queue
        job_ids = await queue.records.user_jobs(interaction.user.id)
        statuses = [await queue.status(j) for j in job_ids[:MAX_LISTED]]
        mine = [s for s in statuses if s.state in (JobState.QUEUED, JobState.RUNNING)]
        workers = await queue.workers()
        waiting = await queue.pending()
        lines = [f"• {describe_status(s)}" for s in mine] or ["You have nothing waiting."]
        embed = discord.Embed(title="Your requests", description="\n".join(lines))
        embed.add_field(name="Workers online", value=str(len(workers)))
        embed.add_field(name="Requests in line", value=str(waiting))
        embed.add_field(name="Typical wait", value=format_wait(self.bot.deliverer.typical_wait_s()))
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: PalicordBot) -> None:
    await bot.add_cog(QueueStatus(bot))
