"""The Bot: takes its resources from `main()`, wires the services, loads one cog per
feature, syncs commands, and answers every command error from one place.

It can talk to a Discord-compatible server instead of discord.com (a REST proxy, or the
test server): discord.py builds every REST URL from `Route.BASE` (interaction webhooks
included) and connects to `DiscordWebSocket.DEFAULT_GATEWAY`, adding
`?v=10&encoding=json&compress=...` itself; both are class attributes, so
`apply_endpoints` changes them for the whole process.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from redis.asyncio import Redis

from bot.cancel import CancelButton
from bot.delivery import Deliverer
from bot.download import Downloader, ImageRef
from bot.errors import report_error
from bot.events import run_interaction
from bot.followups import FollowUp
from bot.guild_config import GuildConfigStore
from bot.limits import Limits
from bot.metrics import BotMetrics
from bot.pictures import Pictures
from bot.progress import ProgressBoard
from bot.replies import Replies
from bot.requests import Ask, Requests
from bot.settings import BotSettings
from inference.errors import QueueUnavailable
from inference.ops import LoopWatch
from inference.queue import Keys, QueueClient
from inference.queue.connection import cancel_and_wait
from inference.tasks import Task

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.describe",
    "bot.cogs.ask",
    "bot.cogs.detect",
    "bot.cogs.ocr",
    "bot.cogs.mentions",
    "bot.cogs.queue_status",
    "bot.cogs.admin",
    "bot.cogs.alt_text",
)
REDIS_PING_INTERVAL_S = 5.0


def apply_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Use these endpoints instead of discord.com's (None keeps the current one)."""
    if api_base:
        Route.BASE = api_base
        log.info("Discord REST base: %s", api_base)
    if gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        log.info("Discord gateway: %s", gateway_url)


def intents(settings: BotSettings) -> discord.Intents:
    """Guild and DM message events (for mentions) and guilds. Messages that mention the
    bot carry their content without the message-content intent; it is asked for only with
    MESSAGE_CONTENT_INTENT, for automatic alt text (privileged: see `bot.__main__`)."""
    out = discord.Intents.none()
    out.guilds = True
    out.guild_messages = True
    out.dm_messages = True
    out.message_content = settings.message_content_intent
    return out


class PalicordTree(app_commands.CommandTree["PalicordBot"]):
    """Slash commands and context menus report their errors through `report_error`."""

    async def on_error(
        self, interaction: discord.Interaction[PalicordBot], error: app_commands.AppCommandError, /
    ) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        await report_error(interaction, error, what=f"command {name}")


class PalicordBot(commands.AutoShardedBot):
    """The Discord front end; see `bot.__main__` for how it is built. Always sharded:
    SHARD_COUNT/SHARD_IDS pick this process's shard range, else Discord's recommended
    count runs here. A shard process serves its guilds' events only, and its own results
    stream (INSTANCE_ID) brings it the answers to what it submitted."""

    def __init__(
        self,
        *,
        settings: BotSettings,
        redis: Redis,
        http_session: aiohttp.ClientSession,
        queue: QueueClient,
        guild_ready_timeout_s: float = 2.0,
        metrics: BotMetrics | None = None,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,  # unused: there are no text commands
            intents=intents(settings),
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=PalicordTree,
            # discord.py waits this long after the last GUILD_CREATE before on_ready.
            guild_ready_timeout=guild_ready_timeout_s,
            # Commands work in servers, in DMs with the bot and, where a user installed the
            # app for themselves, in other servers' channels (/settings stays guild-only).
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=True, private_channel=True
            ),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=True),
            shard_count=settings.shard_count,
            # None is discord.py's own default ("all shards"); its annotation omits it.
            shard_ids=None if settings.shard_ids is None else list(settings.shard_ids),  # type: ignore[arg-type]
        )
        self.settings = settings
        self.redis = redis
        self.http_session = http_session
        self.queue = queue
        self.metrics = metrics or BotMetrics()
        self.metrics.watch_client(self)
        self.redis_ok = False  # the last ping's answer, for /readyz
        # Shards with a live session; discord.py keeps is_ready() set across disconnects.
        self._shards_up: set[int] = set()
        self.loop_watch = LoopWatch()  # for /healthz
        self._background: list[asyncio.Task[None]] = []
        keys = Keys(settings.key_prefix)
        self.configs = GuildConfigStore(redis, keys)
        self.limits = Limits(redis, queue.scripts, keys, cooldown_s=settings.user_cooldown_s)
        self.downloader = Downloader(
            http_session,
            allowed_hosts=settings.attachment_hosts,
            http_hosts=settings.attachment_http_hosts,
            link_hosts=settings.image_link_hosts,
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.download_timeout_s,
        )
        self.pictures = Pictures(
            self.downloader,
            cdn_url=settings.discord_cdn_url,
            preview_wait_s=settings.link_preview_wait_s,
        )
        self.replies = Replies(self, token_ttl_s=settings.interaction_token_ttl_s)
        self.progress = ProgressBoard(queue, self.replies, interval_s=settings.progress_interval_s)
        self.memory = queue.memory
        self.deliverer = Deliverer(
            queue=queue,
            replies=self.replies,
            progress=self.progress,
            token_ttl_s=settings.interaction_token_ttl_s,
            metrics=self.metrics,
        )
        self.requests = Requests(
            settings=settings,
            queue=queue,
            downloader=self.downloader,
            limits=self.limits,
            configs=self.configs,
            progress=self.progress,
            metrics=self.metrics,
        )

    async def login(self, token: str) -> None:
        # Before the first REST call, which login itself makes.
        apply_endpoints(self.settings.discord_api_base, self.settings.discord_gateway_url)
        await super().login(token)
        if self.settings.shard_count is None and self.settings.discord_gateway_url:
            # Asked for a shard count, discord.py would also take Discord's gateway URL
            # and bypass DISCORD_GATEWAY_URL; with a count it connects to the override.
            self.shard_count, _, _ = await self.http.get_bot_gateway()

    async def setup_hook(self) -> None:
        self.metrics.watch_webhooks()  # before any task that answers interactions starts
        # Buttons of answers posted by any earlier run too: all they need is in custom_id.
        self.add_dynamic_items(FollowUp, CancelButton)
        for name in EXTENSIONS:
            await self.load_extension(name)
        await self.sync_commands()
        self._background = [
            asyncio.create_task(self.deliverer.run(), name="palicord-results"),
            asyncio.create_task(self.progress.run(), name="palicord-progress"),
            asyncio.create_task(self._watch_redis(), name="palicord-redis-ping"),
            asyncio.create_task(self.loop_watch.run(), name="palicord-loop-watch"),
        ]

    @property
    def gateway_up(self) -> bool:
        """Every shard this process runs has a live gateway session."""
        return bool(self.shards) and set(self.shards) <= self._shards_up

    def ready_to_serve(self) -> bool:
        """For /readyz: connected to the gateway, and Redis answered the last ping."""
        return self.is_ready() and self.gateway_up and not self.is_closed() and self.redis_ok

    async def on_shard_connect(self, shard_id: int) -> None:
        self._shards_up.add(shard_id)

    async def on_shard_resumed(self, shard_id: int) -> None:
        self._shards_up.add(shard_id)

    async def on_shard_disconnect(self, shard_id: int) -> None:
        self._shards_up.discard(shard_id)

    async def has_picture(self, digest: str) -> bool:
        """For the follow-up buttons (bot.followups)."""
        try:
            return await self.memory.has_picture(digest)
        except QueueUnavailable:
            return True  # let the run itself report the outage

    async def follow_up(
        self, interaction: discord.Interaction[PalicordBot], digest: str, task: Task, **ask: str
    ) -> None:
        """A follow-up button's request, run as a slash command would be (its errors go to
        the button's or the modal's error hook, see `bot.followups`)."""
        picture = ImageRef.stored_picture(digest)
        request = Ask(task, question=ask.get("question"), objects=ask.get("objects"))
        await run_interaction(self.requests, interaction, [picture], request, kind="button")

    async def _watch_redis(self) -> None:
        while True:
            try:
                await self.queue.ping()
                self.redis_ok = True
            except QueueUnavailable:
                self.redis_ok = False
            except Exception:  # never let the readiness signal freeze
                log.exception("Redis ping failed")
                self.redis_ok = False
            await asyncio.sleep(REDIS_PING_INTERVAL_S)

    async def sync_commands(self) -> list[app_commands.AppCommand]:
        """Globally, or to DEV_GUILD_ID only (instant, for development)."""
        if self.settings.dev_guild_id is None:
            return await self.tree.sync()
        guild = discord.Object(id=self.settings.dev_guild_id)
        self.tree.copy_global_to(guild=guild)
        return await self.tree.sync(guild=guild)

    async def on_message(self, message: discord.Message, /) -> None:
        # No text commands: mentions are handled by the mentions cog's listener.
        return None

    async def close(self) -> None:
        await cancel_and_wait(self._background)
        self._background = []
        await super().close()
