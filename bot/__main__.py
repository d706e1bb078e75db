"""`python -m bot`: read the settings, open Redis and HTTP, run the bot until stopped.

Configured from the environment and `.env` (see `bot.settings.BotSettings`):
DISCORD_TOKEN, REDIS_URL, ATTACHMENT_HOSTS, DISCORD_API_BASE, DISCORD_GATEWAY_URL,
DEV_GUILD_ID, INSTANCE_ID, ...

Logs never carry interaction tokens: discord.py logs every REST URL at DEBUG, and
interaction follow-ups travel in the URL (`/webhooks/{app}/{token}`,
`/interactions/{id}/{token}/callback`). An interaction token lets anyone answer as the
bot for 15 minutes, so it is a secret like the bot token, and is redacted here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Callable

import aiohttp
import discord
from pydantic import ValidationError

from bot.client import PalicordBot
from bot.metrics import BotMetrics
from bot.settings import BotSettings
from inference.ops import BOT_METRICS_PORT, resolve_port, serve_ops, use_log_format
from inference.queue import QueueClient, connect

log = logging.getLogger("bot")

_TOKEN_IN_PATH = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Replace interaction/webhook tokens in URL paths."""
    return _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts tokens from the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(logger_names: tuple[str, ...] = ("discord.http", "discord.webhook")) -> None:
    """Attach the filter to the loggers that print REST URLs."""
    for name in logger_names:
        logging.getLogger(name).addFilter(RedactTokens())


async def run(
    settings: BotSettings,
    metrics: BotMetrics | None = None,
    on_bot: Callable[[PalicordBot], None] | None = None,
) -> None:
    """Open the resources, hand them to the bot, close them when it stops."""
    log.info("starting; redis at %s, instance %s", settings.redacted_url(), settings.instance_id)
    async with connect(settings) as redis, aiohttp.ClientSession() as http_session:
        queue = QueueClient(redis, settings, instance_id=settings.instance_id)
        async with PalicordBot(
            settings=settings,
            redis=redis,
            http_session=http_session,
            queue=queue,
            metrics=metrics,
        ) as bot:
            if on_bot is not None:
                on_bot(bot)
            # Docker and Kubernetes stop containers with SIGTERM: close cleanly, as for Ctrl-C.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: asyncio.ensure_future(bot.close())
            )
            await bot.start(settings.discord_token.get_secret_value())


def main() -> int:
    discord.utils.setup_logging(level=logging.INFO, root=True)
    install_redaction()
    try:
        settings = BotSettings()  # fields come from the environment
    except ValidationError as exc:
        # Names the missing/invalid fields only; pydantic never echoes SecretStr values.
        log.error("bad configuration: %s", exc)
        return 2
    use_log_format(settings.log_format)
    metrics = BotMetrics()
    bots: list[PalicordBot] = []
    port = resolve_port(settings.metrics_port, BOT_METRICS_PORT)
    ops = serve_ops(
        settings.metrics_host,
        port,
        metrics.registry,
        lambda: any(b.ready_to_serve() for b in bots),
        lambda: all(b.loop_watch.alive() for b in bots),
    )
    try:
        asyncio.run(run(settings, metrics, bots.append))
    except KeyboardInterrupt:
        pass
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN)")
        return 1
    finally:
        if ops is not None:
            ops.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
