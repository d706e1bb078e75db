"""Exactly one answer per request, even when Redis fails half-way through delivering it
or a result is read again (real Redis; only Discord is replaced, by an outbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from redis.asyncio import Redis

from bot.address import ItemContext, ReplyAddress
from bot.answer import Answer, draw_boxes
from bot.delivery import Deliverer
from bot.download import Downloader
from bot.image_cache import ImageCache
from bot.keys import BotKeys
from bot.progress import ProgressBoard
from bot.request_store import RequestStore
from bot.sender import Sender
from inference.errors import QueueUnavailable
from inference.jobs import JobResult
from inference.queue import QueueClient
from inference.queue_settings import QueueSettings


class Outbox(Sender):
    """Keeps answers instead of sending them to Discord."""

    def __init__(self) -> None:
        super().__init__(discord.Client(intents=discord.Intents.none()), token_ttl_s=60)
        self.sent: list[tuple[ReplyAddress, Answer]] = []

    async def deliver(self, address: ReplyAddress, answer: Answer) -> bool:
        self.sent.append((address, answer))
        return True


class FlakyStore(RequestStore):
    """Redis drops out once, right when the finished request's outcomes are read."""

    failures_left = 1

    async def outcomes(self, request_id: str) -> dict[int, JobResult]:
        if self.failures_left:
            self.failures_left -= 1
            raise QueueUnavailable()
        return await super().outcomes(request_id)


@pytest.fixture
async def parts(
    redis: Redis, redis_prefix: str
) -> AsyncIterator[tuple[Deliverer, Outbox, FlakyStore]]:
    queue = QueueClient(redis, QueueSettings(key_prefix=redis_prefix), instance_id="t")
    outbox = Outbox()
    store = FlakyStore(redis, BotKeys(redis_prefix), ttl_s=60)
    async with aiohttp.ClientSession() as session:
        deliverer = Deliverer(
            queue=queue,
            store=store,
            sender=outbox,
            progress=ProgressBoard(queue, outbox, interval_s=1),
            images=ImageCache(),
            downloader=Downloader(session, allowed_hosts=(), max_bytes=1, timeout_s=1),
            annotator=draw_boxes,
        )
        yield deliverer, outbox, store


def result_for(index: int, count: int) -> JobResult:
    address = ReplyAddress(channel_id=1, user_id=2, guild_id=3, message_id=4)
    item = ItemContext("req", index, count, f"{index}.png", "", address)
    return JobResult(job_id=f"j{index}", context=item.to_context(), task="caption", text="a cat")


async def test_redis_failing_mid_delivery_still_answers_once(
    parts: tuple[Deliverer, Outbox, FlakyStore],
) -> None:
    deliverer, outbox, _ = parts
    result = result_for(0, 1)
    with pytest.raises(QueueUnavailable):
        await deliverer.handle(result)  # unacknowledged: the results loop reads it again
    assert outbox.sent == []
    await deliverer.handle(result)
    await deliverer.handle(result)  # read once more after a restart: no second answer
    assert len(outbox.sent) == 1
    [(_, answer)] = outbox.sent
    assert answer.embeds[0].description == "a cat"


async def test_answer_waits_for_every_image(parts: tuple[Deliverer, Outbox, FlakyStore]) -> None:
    deliverer, outbox, store = parts
    store.failures_left = 0
    await deliverer.handle(result_for(1, 2))
    assert outbox.sent == []
    await deliverer.handle(result_for(0, 2))
    [(_, answer)] = outbox.sent
    assert len(answer.embeds) == 2
