"""pytest fixtures for bot tests; test modules import the ones they use by name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.client import PalicordBot
from inference.worker.service import Worker
from inference.worker.testing import ShapesOracle
from sandbox.discord.actions import DiscordServer
from tests.discord_server.harness import (
    REDIS_URL,
    bot_settings,
    delete_prefix,
    running_bot,
    running_worker,
    unique_prefix,
    worker_settings,
)


@pytest.fixture
async def server() -> AsyncIterator[DiscordServer]:
    srv = DiscordServer()
    await srv.start()
    yield srv
    await srv.close()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = unique_prefix()
    yield value
    redis = Redis.from_url(REDIS_URL)
    async with redis:
        await delete_prefix(redis, value)


@pytest.fixture
async def bot(server: DiscordServer, prefix: str) -> AsyncIterator[PalicordBot]:
    async with running_bot(bot_settings(server, prefix)) as running:
        yield running


@pytest.fixture
async def worker(prefix: str) -> AsyncIterator[Worker]:
    async with running_worker(worker_settings(prefix), ShapesOracle()) as running:
        yield running
