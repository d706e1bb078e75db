"""A Discord-compatible server on loopback for end-to-end tests of the real discord.py bot."""

from tests.discord_server.actions import DiscordServer
from tests.discord_server.interactions import InteractionState
from tests.discord_server.payloads import FakeGuild, FakeUser
from tests.discord_server.recorder import Recorded, SentFile

__all__ = ["DiscordServer", "FakeGuild", "FakeUser", "InteractionState", "Recorded", "SentFile"]
