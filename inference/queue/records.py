"""One record per request, kept by the queue from intake to answer.

A request (one slash command, mention or follow-up; one message's alt text) is opened
once, when the bot has acknowledged it: who is told (`reply_to`, the bot instance), the
items it is made of (a label each), and where and how its answer goes (`reply`, the
bot's own fields, opaque here). Each item then gets exactly one outcome: its job's, put
there by the script that settles the job (`lua/settle.lua`), or one the bot records for
an item that never became a job (an answer from the cache, a refusal before queueing:
`lua/record.lua`). The outcome that completes the request puts one entry naming it on
the bot's results stream, in the same script; the bot reads the record, composes and
sends the one answer, and marks it delivered only once Discord confirmed it (`lease`,
`mark_delivered`).

Jobs name their picture by digest; the picture itself is kept once, in the picture store
(`inference.queue.memory`), pinned there while a job needs it.

Upgrades: a version 1 job (the previous release's) carries its reply address in its
context and reaches the bot alone; `adopt` puts its result into a record made from that
context, together with what the previous release had recorded for the request, so it is
answered like any other (docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from inference.errors import MalformedMessage
from inference.queue.connection import atomic_pipeline, awaited, redis_boundary
from inference.queue.decoding import check_context
from inference.queue.keys import Keys, check_part
from inference.queue.messages import MAX_REQUEST_ITEMS, JobResult
from inference.queue.scripts import Scripts
from inference.queue.settings import QueueSettings

log = logging.getLogger(__name__)

RECORD_SCHEMA_VERSION = 1
MAX_REPLY_FIELDS = 24
MAX_LABEL_CHARS = 100
# A record outlives its last job's deadline by this much (then Redis drops it).
RECORD_MARGIN_S = 3600
# In a version 1 job's context: its request, item, item count, label; the rest of the
# fields below are its reply address, which `bot.replies.ReplyAddress` reads from `reply`.
V1_REQUEST, V1_INDEX, V1_COUNT, V1_LABEL = "rid", "i", "n", "label"
V1_REPLY_FIELDS = ("ch", "u", "g", "mid", "app", "tok", "at", "ref", "ul")
# A version 1 alt-text job's route and the fields its reply is made from (bot.cogs.alt_text).
V1_ROUTE = "via"
V1_ROUTE_FIELDS = ("m", "np", "lang", "sz")
_SENT = "sent"
Lease = Literal["delivered", "send", "busy"]


def _fields(value: Any, what: str, limit: int) -> dict[str, str]:
    if not isinstance(value, dict):
        raise MalformedMessage(f"The request's {what} is not a map.")
    return check_context(value, f"request's {what}", limit)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request as the queue keeps it; `outcomes` is filled when it is read."""

    request_id: str
    reply_to: str  # the bot instance whose stream is told when the request is complete
    labels: tuple[str, ...]  # one per item: what the answer calls it (a file name, or "")
    reply: dict[str, str]  # where and how the answer goes: the bot's, opaque to the queue
    route: str = ""  # which of the bot's handlers answers it ("": a requested answer)
    created_at: float = 0.0
    outcomes: dict[int, JobResult] = field(default_factory=dict)
    v: int = RECORD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        check_part(self.request_id)
        check_part(self.reply_to)
        if not 0 < len(self.labels) <= MAX_REQUEST_ITEMS:
            raise MalformedMessage("A request has between 1 and 64 items.")
        _fields(self.reply, "reply address", MAX_REPLY_FIELDS)

    @property
    def count(self) -> int:
        return len(self.labels)

    def job_id(self, index: int) -> str:
        """Item `index`'s job id: known in advance, so that a bot restarted mid-way can
        ask the queue which items it had queued already."""
        return f"{self.request_id}-{index}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": self.v,
                "request_id": self.request_id,
                "reply_to": self.reply_to,
                "labels": [label[:MAX_LABEL_CHARS] for label in self.labels],
                "reply": self.reply,
                "route": self.route,
                "created_at": self.created_at,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RequestRecord:
        """Decode and validate; raises MalformedMessage."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v") != RECORD_SCHEMA_VERSION:
                raise MalformedMessage("Unsupported request record.")
            labels = data["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise MalformedMessage("The request's labels must be strings.")
            return cls(
                request_id=str(data["request_id"]),
                reply_to=str(data["reply_to"]),
                labels=tuple(labels),
                reply=_fields(data["reply"], "reply address", MAX_REPLY_FIELDS),
                route=str(data.get("route") or ""),
                created_at=float(data["created_at"]),
            )
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise MalformedMessage("The request record is not valid.") from exc

    @classmethod
    def from_v1_context(cls, context: dict[str, str], reply_to: str) -> RequestRecord:
        """The record of the request a version 1 job belongs to, from that job's context
        (its label only: the previous release kept the others' in their own jobs)."""
        try:
            count, index = int(context[V1_COUNT]), int(context[V1_INDEX])
            request_id = context[V1_REQUEST]
        except (KeyError, ValueError) as exc:
            raise MalformedMessage("A job's reply context is incomplete.") from exc
        # Checked before anything is built from them: the numbers come from Redis.
        if not (0 < count <= MAX_REQUEST_ITEMS and 0 <= index < count):
            raise MalformedMessage("A job's reply context has a bad item index.")
        labels = [""] * count
        labels[index] = context.get(V1_LABEL, "")
        route = context.get(V1_ROUTE, "")
        fields = V1_REPLY_FIELDS + (V1_ROUTE_FIELDS if route else ())
        return cls(
            request_id=request_id,
            reply_to=reply_to,
            labels=tuple(labels),
            reply={k: context[k] for k in fields if k in context},
            route=route,
            created_at=time.time(),
        )


class RequestRecords:
    """The records of one bot instance's requests (Redis errors: QueueUnavailable)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        settings: QueueSettings,
        *,
        instance_id: str,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self.instance_id = check_part(instance_id)
        self.ttl_s = int(settings.job_deadline_s) + RECORD_MARGIN_S
        self._retention_ms = settings.result_retention_s * 1000

    def new(
        self, request_id: str, labels: list[str], reply: dict[str, str], *, route: str = ""
    ) -> RequestRecord:
        """A record answered by this instance."""
        return RequestRecord(
            request_id=request_id,
            reply_to=self.instance_id,
            labels=tuple(labels),
            reply=reply,
            route=route,
            created_at=time.time(),
        )

    async def open(self, record: RequestRecord, *, opening: bool = True) -> bool:
        """Keep `record`; False when one with its id exists already. `opening`: listed
        until `close`, for `orphaned` to find should the bot die before queueing it."""
        instance = self.instance_id if opening else ""
        data = record.to_json()
        opened = await self._scripts.open_request(
            record.request_id,
            data,
            items=record.count,
            reply_to=record.reply_to,
            ttl_s=self.ttl_s,
            opening=instance,
            opened_at=time.time(),
        )
        return bool(opened)

    async def close(self, request_id: str) -> None:
        """Every item is queued or has its outcome: no longer an orphan if the bot dies."""
        with redis_boundary():
            await self._redis.zrem(self._keys.opening(self.instance_id), request_id)

    async def drop(self, request_id: str) -> None:
        """Forget a request that will not be answered (refused whole, or cancelled)."""
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.delete(self._keys.request_record(request_id))
            pipe.zrem(self._keys.opening(self.instance_id), request_id)
            await pipe.execute()

    async def record(self, request_id: str, index: int, result: JobResult) -> bool:
        """Item `index`'s outcome, when it never became a job; the last one tells the bot
        through its stream. False if the item had one already or the record is gone."""
        reply = await self._scripts.record_outcome(
            request_id, index, result.to_json(), self._retention_ms
        )
        return reply == 1

    async def read(self, request_id: str) -> RequestRecord | None:
        """The record with its outcomes; None once answered (or expired)."""
        with redis_boundary():
            raw = await awaited(self._redis.hgetall(self._keys.request_record(request_id)))
        data = raw.get(b"data")
        if data is None:
            return None
        record = RequestRecord.from_json(data)
        for name, value in raw.items():
            if not (name.startswith(b"o") and name[1:].isdigit()):
                continue
            try:
                record.outcomes[int(name[1:])] = JobResult.from_json(value)
            except MalformedMessage:
                log.warning("dropping a malformed outcome of request %s", request_id)
        return record

    async def lease(self, request_id: str, ttl_s: float) -> Lease:
        """In one round trip: "delivered" when the answer is out already, "send" for the
        one caller that may send it now (for `ttl_s` at most), else "busy"."""
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hexists(self._keys.request_record(request_id), _SENT)
            pipe.set(self._keys.sending(request_id), b"1", px=int(ttl_s * 1000), nx=True)
            delivered, leased = await pipe.execute()
        return "delivered" if delivered else "send" if leased else "busy"

    async def release(self, request_id: str) -> None:
        with redis_boundary():
            await self._redis.delete(self._keys.sending(request_id))

    async def mark_delivered(self, record: RequestRecord) -> None:
        """Discord confirmed the answer: the record keeps only that mark (no reply token,
        no outcomes) until it expires, so a result read again never answers again."""
        key = self._keys.request_record(record.request_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.hset(key, _SENT, "1")
            pipe.expire(key, self.ttl_s, nx=True)  # a record gone meanwhile: the mark expires too
            pipe.hdel(key, "data", *(f"o{i}" for i in range(record.count)))
            pipe.delete(self._keys.sending(record.request_id))
            await pipe.execute()

    async def orphaned(self, *, before: float, max_age_s: float) -> list[RequestRecord]:
        """Requests this instance opened before `before` (this run's start) and never
        closed, younger than `max_age_s` (the reply token's life); older ones are let go."""
        key = self._keys.opening(self.instance_id)
        with redis_boundary():
            await self._redis.zremrangebyscore(key, "-inf", time.time() - max_age_s)
            ids = await self._redis.zrangebyscore(key, "-inf", before)
        out: list[RequestRecord] = []
        for raw_id in ids:
            request_id = raw_id.decode(errors="replace")
            try:
                record = await self.read(request_id)
            except MalformedMessage:
                record = None
            if record is None:
                await self.close(request_id)
            else:
                out.append(record)
        return out

    # --- each person's jobs, for /queue ---------------------------------------------------

    async def add_user_job(self, user_id: int, job_id: str, deadline_at: float) -> None:
        key = self._keys.user_jobs(user_id)
        with redis_boundary():
            pipe = atomic_pipeline(self._redis)
            pipe.zadd(key, {job_id: deadline_at})
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def remove_user_jobs(self, user_id: int, *job_ids: str) -> None:
        if job_ids:
            with redis_boundary():
                await self._redis.zrem(self._keys.user_jobs(user_id), *job_ids)

    async def user_jobs(self, user_id: int) -> list[str]:
        """The person's jobs still within their deadline, oldest first."""
        key = self._keys.user_jobs(user_id)
        with redis_boundary():
            await self._redis.zremrangebyscore(key, "-inf", time.time())
            ids = await self._redis.zrange(key, 0, -1)
        return [i.decode() for i in ids]

    # --- the previous release's requests (an upgrade) -----------------------------------

    async def adopt(self, result: JobResult) -> bool:
        """A version 1 job's result: recorded in its request's record, made from the job's
        context with what the previous release had recorded for that request, if there is
        none yet. False when the context says nothing usable (the result is dropped)."""
        context = result.context
        try:
            request_id, index = check_part(context[V1_REQUEST]), int(context[V1_INDEX])
        except (KeyError, ValueError):
            return False
        if not await self._exists(request_id):
            try:
                record = RequestRecord.from_v1_context(context, self.instance_id)
            except MalformedMessage:
                return False
            await self.open(record, opening=False)
        # Every time, not only by whoever opened the record: an import cut short by an
        # outage is completed by the retry (an outcome recorded twice counts once).
        await self._import_v1(request_id)
        await self.record(request_id, index, result)
        return True

    async def _exists(self, request_id: str) -> bool:
        with redis_boundary():
            return bool(await self._redis.exists(self._keys.request_record(request_id)))

    async def _import_v1(self, request_id: str) -> None:
        """The outcomes (and delivered mark) the previous release kept for a request, into
        its record; then the old key goes (it holds the reply token)."""
        key = self._keys.request(request_id)
        with redis_boundary():
            stored = await awaited(self._redis.hgetall(key))
        if not stored:
            return
        if b"delivered" in stored:
            record = await self.read(request_id)
            if record is not None:
                await self.mark_delivered(record)
        else:
            for name, value in stored.items():
                if not name.isdigit():
                    continue
                try:
                    outcome = JobResult.from_json(value)
                except MalformedMessage:
                    log.warning("dropping a malformed stored outcome of %s", request_id)
                    continue
                await self.record(request_id, int(name), outcome)
        with redis_boundary():
            await self._redis.delete(key)

    async def v1_intakes(self) -> list[RequestRecord]:
        """Requests the previous release acknowledged but had not finished queueing when
        it stopped, as records (opened here, listed as opening until closed)."""
        key = self._keys.intake(self.instance_id)
        with redis_boundary():
            stored = await awaited(self._redis.hgetall(key))
        out: list[RequestRecord] = []
        for value in stored.values():
            try:
                contexts = json.loads(value)["items"]
                first = RequestRecord.from_v1_context(contexts[0], self.instance_id)
                labels = tuple(str(c.get(V1_LABEL, "")) for c in contexts)
                if len(labels) != first.count:
                    labels = first.labels
                record = RequestRecord(first.request_id, first.reply_to, labels, first.reply)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError, MalformedMessage):
                log.warning("dropping a malformed intake record of the previous release")
                continue
            await self.open(record)  # opened already by a run cut short: read it back
            kept = await self.read(record.request_id)
            if kept is not None:
                out.append(kept)
        # Only now: a run that dies before this finds them in the old key again.
        with redis_boundary():
            await self._redis.delete(key)
        return out
