"""`python -m bot`: read the settings, open Redis and HTTP, run the bot until stopped.

Configured from the environment and `.env` (see `bot.settings.BotSettings`):
DISCORD_TOKEN, REDIS_URL, ATTACHMENT_HOSTS, DISCORD_API_BASE, DISCORD_GATEWAY_URL,
DEV_GUILD_ID, INSTANCE_ID, ...

Logs never carry interaction tokens: discord.py logs every REST URL at DEBUG, and
interaction follow-ups travel in the URL (`/webhooks/{app}/{token}`,
`/interactions/{id}/{token}/callback`). An interaction token lets anyone answer as the
bot for 15 minutes, so it is a secret like the bot token, and is redacted here: by a
filter on the root logger's handlers, which every discord.py logger (`discord.http`,
`discord.webhook.async_`, `discord.gateway`, ...) reaches, with the bot token and the
Redis password as well once the settings are read. A wrong setting ends the program
with one line naming it, never its value, and exit status 2.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Callable, Iterable

import aiohttp
import discord

from bot.client import PalicordBot
from bot.metrics import BotMetrics
from bot.settings import BotSettings
from inference.errors import ConfigurationError
from inference.ops import BOT_METRICS_PORT, resolve_port, serve_ops, use_log_format
from inference.queue import QueueClient, connect
from inference.queue.settings import load_settings

log = logging.getLogger("bot")

_TOKEN_IN_PATH = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
# discord.gateway logs every event at DEBUG, as a dict: an interaction's carries its token.
_TOKEN_IN_PAYLOAD = re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+""")
REDACTED = "[redacted]"
EXIT_BAD_CONFIGURATION = 2
# Discord closes the gateway with 4014 when the bot asks for an intent its application
# has not been granted; the only one Palicord may ask for is Message Content.
PRIVILEGED_INTENT_REFUSED = (
    "Discord refused the Message Content intent (gateway close code 4014). Automatic alt "
    "text needs it: switch on Developer Portal → your application → Bot → Message Content "
    "Intent, or set MESSAGE_CONTENT_INTENT=false to run without automatic alt text."
)
MIN_SECRET_CHARS = 4


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace interaction/webhook tokens in URL paths, and each of `secrets`."""
    text = _TOKEN_IN_PATH.sub(rf"\g<1>{REDACTED}", text)
    text = _TOKEN_IN_PAYLOAD.sub(rf"\g<1>{REDACTED}", text)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


class RedactTokens(logging.Filter):
    """A handler filter that redacts tokens from the message and any traceback."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info is not None:
            # An aiohttp error's text quotes its URL; formatters print exc_text when set.
            trace = record.exc_text or logging.Formatter().formatException(record.exc_info)
            cleaned = redact(trace, self.secrets)
            if cleaned != trace:
                record.exc_info, record.exc_text = None, cleaned
        return True


def install_redaction(secrets: Iterable[str] = ()) -> RedactTokens:
    """Attach the filter to every handler of the root logger (once), so that it sees the
    records of every logger below it; `secrets` are redacted too, wherever they appear."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    found = [f for h in root.handlers for f in h.filters if isinstance(f, RedactTokens)]
    redactor = found[0] if found else RedactTokens()
    for handler in root.handlers:
        if redactor not in handler.filters:
            handler.addFilter(redactor)
    # Longest first, so that a secret containing another is replaced whole. A value of a
    # few characters would blank out every word that holds it, and guards nothing anyway.
    wanted = {*redactor.secrets, *(s for s in secrets if len(s) >= MIN_SECRET_CHARS)}
    redactor.secrets = tuple(sorted(wanted, key=len, reverse=True))
    return redactor


def setup_logging() -> None:
    """discord.py's handler on the root logger, with the token filter on it."""
    discord.utils.setup_logging(level=logging.INFO, root=True)
    install_redaction()


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
    setup_logging()
    try:
        settings = load_settings(BotSettings)  # fields come from the environment
    except ConfigurationError as exc:
        log.error("bad configuration: %s", exc)
        return EXIT_BAD_CONFIGURATION
    install_redaction(settings.secrets())
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
    except discord.PrivilegedIntentsRequired:
        log.error(PRIVILEGED_INTENT_REFUSED)
        return 1
    finally:
        if ops is not None:
            ops.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
