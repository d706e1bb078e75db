"""The Cancel button on a request's "⏳ In line" message: only the person who asked may
press it; what is still in line (or running) is dropped and never answered, and given back
to the day's quotas (`Requests.cancel`).

Like the follow-up buttons, it keeps everything it needs in its `custom_id`
(`pc:cancel:<request id>:<user id>:<images>:<day charged>`), so a press works after a
restart too (discord.py's `DynamicItem`, registered at start-up).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.errors import NotRequester, ReportsErrors
from bot.followups import PREFIX
from bot.limits import Charge, quota_scopes

if TYPE_CHECKING:
    from bot.client import PalicordBot

TEMPLATE = (
    rf"{PREFIX}:cancel:(?P<request>[0-9a-f]{{32}}):(?P<user>[0-9]{{1,20}})"
    r":(?P<count>[0-9]{1,3}):(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})"
)


class CancelButton(
    ReportsErrors, discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE
):
    """Cancels request `request_id` of `count` images, asked by `user_id`, charged on `day`."""

    def __init__(self, request_id: str, user_id: int, count: int, day: str) -> None:
        custom_id = f"{PREFIX}:cancel:{request_id}:{user_id}:{count}:{day}"
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.secondary, custom_id=custom_id
            )
        )
        self.request_id, self.user_id, self.count, self.day = request_id, user_id, count, day
        self.what = "button cancel"

    # discord.py types its hooks with an unbound ClientT; ours take this bot's interactions.
    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls,
        interaction: discord.Interaction[PalicordBot],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> CancelButton:
        return cls(match["request"], int(match["user"]), int(match["count"]), match["day"])

    async def press(self, interaction: discord.Interaction[PalicordBot]) -> None:
        if interaction.user.id != self.user_id:
            raise NotRequester()
        scopes = quota_scopes(interaction.guild_id, self.user_id)
        charge = Charge(day=self.day, scopes=scopes, total=0)
        await interaction.client.requests.cancel(interaction, self.request_id, self.count, charge)


def cancel_view(request_id: str, user_id: int, count: int, day: str) -> discord.ui.View:
    """The progress message's one button. Persistent: no timeout, all in the custom_id."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(request_id, user_id, count, day))
    return view
