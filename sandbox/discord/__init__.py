"""A Discord-compatible server on loopback: REST, gateway websocket and CDN, enough for the
real discord.py bot to run unchanged against it. The sandbox (`python -m sandbox`) puts a
browser page and a scripting API on top; the bot's end-to-end tests drive it directly.
The bot never imports it: it only talks to it over HTTP and the gateway."""

from sandbox.discord.actions import DiscordServer
from sandbox.discord.interactions import InteractionState
from sandbox.discord.payloads import FakeGuild, FakeUser
from sandbox.discord.recorder import Recorded, SentFile
from sandbox.discord.rest import Fault

__all__ = [
    "DiscordServer",
    "FakeGuild",
    "FakeUser",
    "Fault",
    "InteractionState",
    "Recorded",
    "SentFile",
]
