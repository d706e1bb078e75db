"""Point discord.py at a Discord-compatible server (a REST proxy, or the test server).

discord.py builds every REST URL from `Route.BASE` (interaction webhooks included) and
connects to `DiscordWebSocket.DEFAULT_GATEWAY`, adding `?v=10&encoding=json&compress=...`
itself; both are class attributes, so this changes them for the whole process.
"""

from __future__ import annotations

import logging

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

log = logging.getLogger(__name__)


def apply_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Use these endpoints instead of discord.com's (None keeps the current one)."""
    if api_base:
        Route.BASE = api_base
        log.info("Discord REST base: %s", api_base)
    if gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        log.info("Discord gateway: %s", gateway_url)
