"""Replies: the place-in-line text, the reply address carried in each job, and a progress
board that stays bounded however many requests wait."""

from __future__ import annotations

import discord
import pytest
from redis.asyncio import Redis

from bot.progress import ProgressBoard, progress_text
from bot.replies import Replies, ReplyAddress
from inference.errors import MalformedMessage
from inference.queue import JobState, JobStatus, QueueClient, QueueSettings


def test_progress_text_for_one_and_several_images() -> None:
    assert progress_text([JobStatus(JobState.QUEUED, 3)]) == "⏳ In line: #3"
    # an estimate (the exact place would need a walk over every waiting server)
    assert progress_text([JobStatus(JobState.QUEUED, 40, exact=False)]) == "⏳ In line: about #40"
    assert progress_text([JobStatus(JobState.RUNNING)]) == "⚙️ Working on it…"
    several = [
        JobStatus(JobState.QUEUED, 5),
        JobStatus(JobState.RUNNING),
        JobStatus(JobState.QUEUED, 2),
    ]
    assert progress_text(several) == "⏳ 3 images to go · 1 in progress · next in line: #2"


def test_reply_address_round_trip_and_bad_fields() -> None:
    address = ReplyAddress(
        channel_id=1,
        user_id=2,
        guild_id=None,
        message_id=4,
        app_id=5,
        token="t" * 30,
        issued_at=9.5,
    )
    assert ReplyAddress.from_fields(address.to_fields()) == address
    with pytest.raises(MalformedMessage):
        ReplyAddress.from_fields({**address.to_fields(), "mid": "four"})
    with pytest.raises(MalformedMessage):
        ReplyAddress.from_fields({"rid": "x"})


class ShownProgress(Replies):
    """Records progress edits instead of sending them to Discord."""

    def __init__(self) -> None:
        super().__init__(discord.Client(intents=discord.Intents.none()), token_ttl_s=60)
        self.shown: list[int] = []

    async def show_progress(
        self, address: ReplyAddress, text: str, buttons: discord.ui.View | None = None
    ) -> bool:
        self.shown.append(address.channel_id)
        return True


async def test_the_progress_board_is_bounded(redis: Redis, redis_prefix: str) -> None:
    queue = QueueClient(redis, QueueSettings(key_prefix=redis_prefix), instance_id="t")
    replies = ShownProgress()
    board = ProgressBoard(queue, replies, interval_s=1, max_tracked=3)
    for n in range(10):
        address = ReplyAddress(channel_id=n, user_id=2, guild_id=3, message_id=100 + n)
        board.track(f"r{n}", address, [f"j{n}"], shown="")
    for n in range(10):
        await board.show_now(f"r{n}", "⏳ In line: #1")
    # The oldest requests stop showing progress (their answers still come); the newest keep it.
    assert replies.shown == [7, 8, 9]
