"""`python -m bot`: read the settings, open Redis and HTTP, run the bot until stopped.

Configured from the environment and `.env` (see `bot.settings.BotSettings`):
DISCORD_TOKEN, REDIS_URL, ATTACHMENT_HOSTS, DISCORD_API_BASE, DISCORD_GATEWAY_URL,
DEV_GUILD_ID, INSTANCE_ID, ...
"""

from __future__ import annotations

import asyncio
import logging
import sys

import aiohttp
import discord
from pydantic import ValidationError

from bot import log_redact
from bot.answer import draw_boxes
from bot.client import PalicordBot
from bot.settings import BotSettings
from inference.queue import QueueClient, connect

log = logging.getLogger("bot")


async def run(settings: BotSettings) -> None:
    """Open the resources, hand them to the bot, close them when it stops."""
    log.info("starting; redis at %s, instance %s", settings.redacted_url(), settings.instance_id)
    async with connect(settings) as redis, aiohttp.ClientSession() as http_session:
        queue = QueueClient(redis, settings, instance_id=settings.instance_id)
        async with PalicordBot(
            settings=settings,
            redis=redis,
            http_session=http_session,
            queue=queue,
            annotator=draw_boxes,
        ) as bot:
            await bot.start(settings.discord_token.get_secret_value())


def main() -> int:
    discord.utils.setup_logging(level=logging.INFO, root=True)
    log_redact.install()
    try:
        settings = BotSettings()  # fields come from the environment
    except ValidationError as exc:
        # Names the missing/invalid fields only; pydantic never echoes SecretStr values.
        log.error("bad configuration: %s", exc)
        return 2
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
