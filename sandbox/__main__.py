"""`python -m sandbox` (what `make run` starts without DISCORD_TOKEN): the whole product on
one machine. Redis (found or started), the real worker with the demo model or MODEL_ID, the
real bot connected to a local Discord-compatible server, and a browser page on that server
that plays Discord. Ctrl-C (or SIGTERM) stops everything it started, bot first.

Settings, from the environment: SANDBOX_PORT (default 8080, else any free port),
REDIS_URL, LOCAL_REDIS_PORT (where an already running Redis is looked for, default 6379),
MODEL_ID, and anything the worker or the bot reads (USER_COOLDOWN_S, ...), which they get
unchanged. All of them are checked before anything starts: a wrong one ends the sandbox
with one line naming it (never its value) and exit status 2.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.settings import BotSettings
from inference.demo.shapes import encode_png, make_scene
from inference.errors import ConfigurationError
from inference.queue.settings import load_settings
from inference.settings import WorkerSettings
from sandbox.discord import DiscordServer
from sandbox.stack import (
    ROOT,
    Child,
    RedisChoice,
    choose_redis,
    endpoint_ready,
    free_port,
    port_free,
    python_module,
    spawn,
)
from sandbox.web import Sandbox

log = logging.getLogger("sandbox")

DEFAULT_PORT = 8080
DATA_DIR = ROOT / ".palicord"
DEMO_MODEL = ROOT / "models" / "palicord-tiny"
SERVERS = ("Shapes Club", "Art Lounge", "Dev Corner")
# A second channel in each server; in the first, its admins turned automatic alt text on.
ALT_TEXT_CHANNEL = "art"
MODEL_LOAD_TIMEOUT_S = 30 * 60  # a 28B checkpoint from a slow disk
BOT_START_TIMEOUT_S = 60
DEMO_NOTICE = (
    "Demo model: it only knows coloured circles, squares and triangles on a plain "
    "background; try the sample pictures. For real photos, run with "
    "MODEL_ID=google/paligemma2-3b-mix-448 (and HF_TOKEN) on a GPU; see the README."
)


class SandboxSettings(BaseSettings):
    """The sandbox's own settings, from the environment only (its children read `.env`)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    sandbox_port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)  # 0: any free port
    local_redis_port: int = Field(default=6379, ge=1, le=65535)


def check_children(configured_redis_url: str | None, local_redis_port: int) -> None:
    """Build the worker's and the bot's settings as they will start (the environment and
    `.env`, with what the sandbox sets for them), so that a wrong setting ends the sandbox
    at once, in one line, rather than in a child's log after Redis and the server started."""
    common = {
        "_env_file": ROOT / ".env",
        "redis_url": configured_redis_url or f"redis://127.0.0.1:{local_redis_port}/0",
        "key_prefix": key_prefix(DEFAULT_PORT),  # any sandbox's: same checks
        "metrics_port": 0,
    }
    load_settings(WorkerSettings, **common)
    load_settings(BotSettings, discord_token="sandbox", instance_id="sandbox", **common)


def _samples() -> dict[str, bytes]:
    out = {"shapes.png": (ROOT / "samples" / "shapes.png").read_bytes()}
    for seed in (3, 11, 29):
        scene = make_scene(random.Random(seed), size=(224, 224), max_shapes=2)
        out[f"scene-{seed}.png"] = encode_png(scene.image)
    out["animated.gif"] = _animated_sample()
    return out


def _animated_sample() -> bytes:
    """A GIF of 9 frames, a shape moving across: the bot answers about frame 5 of 9."""
    frames = []
    for step in range(9):
        frame = Image.new("RGB", (224, 224), (245, 245, 240))
        x = 20 + step * 18
        ImageDraw.Draw(frame).ellipse((x, 80, x + 60, 140), fill=(220, 40, 40))
        frames.append(frame)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=120, loop=0)
    return buf.getvalue()


def _port(wanted: int) -> int:
    if wanted and port_free(wanted):
        return wanted
    port = free_port()
    log.warning("port %d is taken; the sandbox uses %d instead (set SANDBOX_PORT)", wanted, port)
    return port


def key_prefix(port: int) -> str:
    """The keys of the sandbox serving on `port`: a second sandbox on the same Redis (on
    another port) has its own queue, results stream and keys, and clears only its own."""
    return f"{{palicord-sandbox-{port}}}:"


async def _clear_prefix(url: str, prefix: str) -> None:
    """The sandbox's own keys only: a Redis it shares with a real deployment keeps its."""
    redis = Redis.from_url(url)
    async with redis:
        keys = [k async for k in redis.scan_iter(match=prefix.replace("{", "\\{") + "*")]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start : start + 500])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Stack:
    """Everything one sandbox run started, stopped in reverse order."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.stop_requested = asyncio.Event()
        self.redis: RedisChoice | None = None
        self.server: DiscordServer | None = None
        self.children: list[tuple[Child, Path]] = []
        self.port = 0

    def request_stop(self) -> None:
        self.stop_requested.set()

    def dead_child(self) -> tuple[Child, Path] | None:
        return next(((c, p) for c, p in self.children if not c.running()), None)

    async def _wait(
        self, ready: Callable[[], bool], what: str, timeout_s: float, progress: bool
    ) -> bool:
        started = time.monotonic()
        last_note = 0.0
        while not ready():
            dead = self.dead_child()
            if dead is not None:
                child, path = dead
                print(f"\n{child.name} exited ({child.proc.returncode}); its log:\n{_tail(path)}")
                return False
            waited = time.monotonic() - started
            if waited > timeout_s:
                print(f"\n{what} took more than {timeout_s:.0f} s; giving up")
                return False
            if self.stop_requested.is_set():
                return False
            if progress and sys.stderr.isatty():
                print(f"\r{what}… {waited:4.0f} s", end="", file=sys.stderr, flush=True)
            elif progress and waited - last_note >= 10:
                last_note = waited
                log.info("%s… %.0f s", what, waited)
            await asyncio.sleep(0.25)
        if progress and sys.stderr.isatty():
            print(f"\r{what}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
        return True

    async def start(self) -> bool:
        DATA_DIR.mkdir(exist_ok=True)
        logs = DATA_DIR / "logs"
        logs.mkdir(exist_ok=True)
        self.redis = choose_redis(
            os.environ.get("REDIS_URL"),
            DATA_DIR / "redis",
            local_port=self.settings.local_redis_port,
        )
        log.info("Redis: %s", self.redis.description)
        self.port = _port(self.settings.sandbox_port)  # names this sandbox's keys too
        await _clear_prefix(self.redis.url, key_prefix(self.port))

        model = os.environ.get("MODEL_ID") or str(DEMO_MODEL)
        demo = not os.environ.get("MODEL_ID")
        notice = DEMO_NOTICE if demo else f"Model: {model}"
        if demo:
            log.warning(DEMO_NOTICE)
        self.server = DiscordServer(
            guild_names=SERVERS,
            extra_channels=(ALT_TEXT_CHANNEL,),
            keep_records=5_000,
            cdn_max_bytes=256 * 1024 * 1024,
        )
        page = Sandbox(self.server, notice=notice, samples=_samples())
        page.model_ready = False
        await self.server.start(port=self.port, more_routes=page.routes)

        base = {**os.environ, "REDIS_URL": self.redis.url, "KEY_PREFIX": key_prefix(self.port)}
        worker_port, bot_port = free_port(), free_port()
        worker_env = {**base, "MODEL_ID": model, "METRICS_PORT": str(worker_port)}
        if demo:
            worker_env["HF_HUB_OFFLINE"] = "1"  # a local folder: never ask the hub
        worker_log = logs / "worker.log"
        worker = spawn("worker", python_module("inference.worker"), worker_env, worker_log)
        self.children.append((worker, worker_log))
        bot_env = {
            **base,
            "DISCORD_TOKEN": self.server.token,
            "DISCORD_API_BASE": self.server.api_base,
            "DISCORD_GATEWAY_URL": self.server.gateway_url,
            "ATTACHMENT_HTTP_HOSTS": "127.0.0.1",
            # Stickers and custom emoji from the sandbox's CDN; links to the sandbox's own
            # pictures are not on IMAGE_LINK_HOSTS, so they are read from its previews.
            "DISCORD_CDN_URL": self.server.cdn.url,
            "INSTANCE_ID": f"sandbox-{self.port}",
            "METRICS_PORT": str(bot_port),
            # The sandbox's application has the intent: #art describes pictures by itself.
            "MESSAGE_CONTENT_INTENT": "true",
        }
        bot_log = logs / "bot.log"
        self.children.append((spawn("bot", python_module("bot"), bot_env, bot_log), bot_log))

        if not await self._wait(
            lambda: endpoint_ready(worker_port), "Loading the model", MODEL_LOAD_TIMEOUT_S, True
        ):
            return False
        page.model_ready = True
        gateway = self.server.gateway
        if not await self._wait(
            gateway.ready.is_set, "Connecting the bot", BOT_START_TIMEOUT_S, False
        ):
            return False
        await self._turn_on_alt_text()
        print(
            "\nPalicord is up.\n"
            f"  Sandbox: http://127.0.0.1:{self.port}/\n"
            f"  Redis:   {self.redis.description}\n"
            f"  Model:   {model}{' (demo: coloured shapes only)' if demo else ''}\n"
            f"  Worker:  pid {worker.proc.pid}, http://127.0.0.1:{worker_port}/metrics, "
            f"log {worker_log}\n"
            f"  Bot:     http://127.0.0.1:{bot_port}/metrics, log {bot_log}\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        return True

    async def _turn_on_alt_text(self) -> None:
        """In the first server, #art describes pictures posted without alt text: set the
        way an admin would, with /settings (its private reply goes to nobody on the page)."""
        assert self.server is not None
        guild = self.server.guild
        art = guild.channel_named(ALT_TEXT_CHANNEL)
        admin = self.server.user("sandbox admin", admin=True)
        state = await self.server.slash(
            "settings", user=admin, guild=guild, alt_text_channels=f"<#{art.id}>"
        )
        await self.server.wait_for_callback(state, timeout_s=10)

    async def stop(self) -> None:
        # The bot first: no new jobs; then the worker finishes or hands back its batch.
        for child, _ in reversed(self.children):
            code = await asyncio.to_thread(child.stop)
            log.info("%s stopped (%s)", child.name, code)
        if self.server is not None:
            await self.server.close()
        if self.redis is not None:
            try:
                await _clear_prefix(self.redis.url, key_prefix(self.port))
            except RedisError as exc:
                log.warning("could not remove the sandbox's keys from Redis: %s", exc)
            if self.redis.child is not None:
                await asyncio.to_thread(self.redis.child.stop)
                log.info("the private redis-server stopped")


async def run(settings: SandboxSettings) -> int:
    stack = Stack(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stack.request_stop)
    try:
        if not await stack.start():
            return 0 if stack.stop_requested.is_set() else 1
        while not stack.stop_requested.is_set():
            dead = stack.dead_child()
            if dead is not None:
                child, path = dead
                print(f"{child.name} exited ({child.proc.returncode}); its log:\n{_tail(path)}")
                return 1
            try:
                await asyncio.wait_for(stack.stop_requested.wait(), 1.0)
            except TimeoutError:
                continue
        print("\nStopping…", flush=True)
        return 0
    finally:
        await stack.stop()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # a line per poll
    try:
        settings = load_settings(SandboxSettings)
        check_children(os.environ.get("REDIS_URL"), settings.local_redis_port)
    except ConfigurationError as exc:  # names the wrong settings, never their values
        log.error("bad configuration: %s", exc)
        return 2
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
