"""The bot's side of the job queue: submit, status, cancel, workers, and results; the
records of its requests (`records`) and the kept pictures and answers (`memory`).

Torch-free. Every method raises QueueUnavailable when Redis fails. Results come back
over a Redis Stream per bot instance, read with a consumer group: an entry stays pending
until the bot acknowledges it, so a bot that restarts with the same `instance_id` first
gets again what it read but never handled, then what was produced while it was away. Typical use::

    client = QueueClient(redis, settings, instance_id="bot-1")
    record = client.records.new(request_id, ["cat.png"], reply={...})
    await client.records.open(record)
    digest = await client.memory.keep_picture(image_bytes)
    job = client.new_job(spec, guild_id=..., user_id=..., picture=digest,
                         job_id=record.job_id(0), request=(request_id, 0))
    submitted = await client.submit(job)                # may raise QueueFull, ...
    async for delivery in client.results():             # once the request is complete
        await answer(await client.records.read(delivery.request_id))  # the bot's own code
        await client.ack(delivery)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from inference.errors import (
    GuildOverCap,
    ImageTooLarge,
    MalformedMessage,
    PictureExpired,
    QueueBusy,
    QueueUnavailable,
    UserOverCap,
    error_from_code,
)
from inference.queue.connection import redis_boundary
from inference.queue.keys import (
    DM_GUILD,
    Keys,
    background_unit,
    check_part,
    fairness_unit,
    is_key_part,
)
from inference.queue.memory import Memory, picture_digest
from inference.queue.messages import Job, JobResult, JobState, WorkerInfo
from inference.queue.records import V1_INDEX, V1_REQUEST, RequestRecords
from inference.queue.scripts import CancelOutcome, Scripts, SubmitStatus
from inference.queue.settings import QueueSettings
from inference.tasks import TaskSpec

log = logging.getLogger(__name__)

RESULTS_GROUP = "bot"
RESULTS_BLOCK_MS = 5_000  # how long one read of the results stream waits for news


@dataclass(frozen=True, slots=True)
class JobStatus:
    """Where a job is (`submit` answers with its place in line, 1 = next to be taken);
    `place` is meaningful only while it is queued. A place that would cost a walk over
    every waiting guild to know exactly is estimated: `exact` False, shown as "about"."""

    state: JobState
    place: int = 0
    exact: bool = True
    job_id: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An entry read from this instance's stream; acknowledge it once handled. Either a
    request is complete (`request_id`: its record holds the outcomes, see
    `inference.queue.records`), or a job of no request settled (`job_result`: a version
    1 job's, or one sent alone by a tool)."""

    entry_id: str
    request_id: str | None = None
    job_result: JobResult | None = None

    @property
    def result(self) -> JobResult:
        """The job's result, for an entry of a job of no request (raises otherwise)."""
        if self.job_result is None:
            raise ValueError(f"stream entry {self.entry_id} names a request, not a result")
        return self.job_result


def _requests(n: int) -> str:
    return f"{n} request" if n == 1 else f"{n} requests"


class QueueClient:
    """Async client the bot uses; one per bot instance (`instance_id` names its stream)."""

    def __init__(
        self,
        redis: Redis,
        settings: QueueSettings,
        *,
        instance_id: str,
        require_worker: bool = True,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._scripts = Scripts(redis, self._keys)
        self.instance_id = check_part(instance_id)
        self._require_worker = require_worker
        self._group_ready = False
        self.memory = Memory(redis, self._keys, self._scripts, settings)
        self.records = RequestRecords(
            redis, self._keys, self._scripts, settings, instance_id=instance_id
        )

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def scripts(self) -> Scripts:
        """The queue's scripts on this client's connection (the bot's quota uses one)."""
        return self._scripts

    def new_job(
        self,
        spec: TaskSpec,
        *,
        guild_id: int | str | None,
        user_id: int | str,
        channel_id: int | str | None = None,
        context: Mapping[str, str] | None = None,
        job_id: str | None = None,
        picture: str | None = None,
        request: tuple[str, int] | None = None,
    ) -> Job:
        """A job addressed to this instance, due after the configured deadline; on the
        kept `picture` (a digest), and item `request[1]` of request `request[0]`."""
        request_id, index = request or (None, 0)
        if request_id is not None:
            # Named in the context too: an older worker, which cannot run this job, still
            # answers it (as an error) into the request's record (`RequestRecords.adopt`).
            context = {**(context or {}), V1_REQUEST: request_id, V1_INDEX: str(index)}
        return Job.new(
            spec,
            guild_id=guild_id,
            user_id=user_id,
            channel_id=channel_id,
            reply_to=self.instance_id,
            deadline_s=self._settings.job_deadline_s,
            context=context,
            job_id=job_id,
            picture=picture,
            request_id=request_id,
            index=index,
        )

    async def submit(
        self, job: Job, image: bytes | None = None, *, background: bool = False
    ) -> JobStatus:
        """Queue `job` on its picture: the one kept under `job.picture`, else under `image`'s
        digest; `image` is kept first when no picture is kept under it (once,
        however many jobs use it; again should it have been dropped meanwhile).
        Raises QueueFull, GuildOverCap, UserOverCap, NoWorkerAlive, ImageTooLarge,
        PictureExpired (no picture to run on), QueueBusy (pictures over
        MAX_QUEUED_BYTES, or Redis full) or QueueUnavailable. In DMs the job waits
        for its person's own turn (`fairness_unit`); the per-user cap counts the
        person's jobs in every guild and DM.

        `background` (automatic alt text, which nobody asked for): the job waits in the
        background ring, taken only in batch slots interactive jobs leave; it is
        counted under its guild's background unit and its channel, not the person,
        and may fill at most half of MAX_PENDING and MAX_QUEUED_BYTES, so
        interactive work always has room."""
        if image is not None and len(image) > self._settings.max_image_bytes:
            raise ImageTooLarge()
        if job.picture is None:
            if image is None:
                raise PictureExpired()
            job = dataclasses.replace(job, picture=picture_digest(image))
        try:
            return await self._submit(job, background)
        except PictureExpired:
            if image is None:
                raise
            # Not kept yet (or dropped for space meanwhile): kept now, once.
            await self.memory.keep_picture(image)
        try:
            return await self._submit(job, background)
        except PictureExpired as exc:
            # Dropped again between keeping and queueing: the store is full of pictures
            # queued jobs need, which only time frees.
            raise QueueBusy() from exc

    async def _submit(self, job: Job, background: bool) -> JobStatus:
        assert job.picture is not None
        s = self._settings
        guild, user = fairness_unit(job.guild_id, job.user_id), job.user_id
        max_pending, max_user, max_bytes = s.max_pending, s.max_pending_per_user, s.max_queued_bytes
        if background:
            guild, user = background_unit(guild), f"c{job.channel_id or job.guild_id}"
            max_pending, max_bytes = max(1, max_pending // 2), max(1, max_bytes // 2)
            max_user = s.max_pending_per_guild  # per channel: the guild's cap bounds it
        status, place, exact = await self._scripts.submit(
            job.job_id,
            job.to_json(),
            guild=guild,
            user=user,
            task=job.spec.task,
            deadline_at=job.deadline_at,
            picture=job.picture,
            image_ttl_s=s.image_ttl_s,
            max_pending=max_pending,
            max_guild=s.max_pending_per_guild,
            max_user=max_user,
            require_worker=self._require_worker,
            max_queued_bytes=max_bytes,
            request=None if job.request_id is None else (job.request_id, job.index),
        )
        if status == SubmitStatus.DUPLICATE:
            raise ValueError(f"job {job.job_id} was already submitted")
        if status == UserOverCap.code:
            raise UserOverCap(
                f"You already have {_requests(s.max_pending_per_user)} waiting (counted across "
                "every server and DM). You can send another as soon as one is answered."
            )
        if status == GuildOverCap.code:
            where = "You already have" if job.guild_id == DM_GUILD else "This server already has"
            raise GuildOverCap(
                f"{where} {_requests(s.max_pending_per_guild)} waiting. More can be sent as "
                "soon as one of them is answered."
            )
        if status != SubmitStatus.OK:
            raise error_from_code(status)
        return JobStatus(JobState.QUEUED, place, exact, job_id=job.job_id)

    async def status(self, job_id: str) -> JobStatus:
        """The job's state and, while queued, its estimated place in line."""
        state, place, exact = await self._scripts.status(job_id)
        return JobStatus(state=state, place=place, exact=exact, job_id=job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job; True if this prevents its result (queued or running)."""
        outcome = await self._scripts.cancel(job_id, self._settings.done_ttl_s)
        return outcome in (CancelOutcome.CANCELLED, CancelOutcome.RUNNING)

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat is current."""
        now = await self._scripts.server_time()
        with redis_boundary():
            ids = await self._redis.zrangebyscore(self._keys.workers, now, "+inf")
            if not ids:
                return []
            names = [i.decode(errors="replace") for i in ids]
            # Ids are written by workers, which check them; skip anything planted.
            valid = [n for n in names if is_key_part(n)]
            if not valid:
                return []
            raws = await self._redis.mget([self._keys.worker(n) for n in valid])
        out: list[WorkerInfo] = []
        for raw in raws:
            if raw is None:
                continue
            try:
                out.append(WorkerInfo.from_json(raw))
            except MalformedMessage:
                log.warning("ignoring a malformed worker record")
        return out

    async def ping(self) -> None:
        """Raises QueueUnavailable unless Redis answers."""
        with redis_boundary():
            await self._redis.ping()

    async def pending(self) -> int:
        """Outstanding jobs (queued or running) across all guilds."""
        with redis_boundary():
            return int(await self._redis.get(self._keys.pending) or 0)

    async def _ensure_group(self, stream: str) -> None:
        with redis_boundary():
            try:
                # From id 0: results produced before this instance ever read are delivered too.
                await self._redis.xgroup_create(stream, RESULTS_GROUP, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    async def results(
        self, *, block_ms: int | None = None, count: int = 100
    ) -> AsyncGenerator[Delivery, None]:
        """Yield results for this instance forever: first those read before but never
        acknowledged, then new ones. Malformed entries are logged and dropped."""
        if block_ms is None:
            # Well inside the socket timeout, so an idle stream never reads as an outage.
            block_ms = min(RESULTS_BLOCK_MS, int(self._settings.redis_timeout_s * 500))
        stream = self._keys.results(self.instance_id)
        cursor = "0"  # "0": our pending entries (paged by id); ">": never-delivered ones
        while True:
            if not self._group_ready:
                await self._ensure_group(stream)
            try:
                with redis_boundary():
                    reply = await self._redis.xreadgroup(
                        RESULTS_GROUP,
                        self.instance_id,
                        {stream: cursor},
                        count=count,
                        block=None if cursor != ">" else block_ms,
                    )
            except QueueUnavailable as exc:
                if "NOGROUP" not in str(exc.__cause__):
                    raise
                # The stream expired (no results for a long time) and took the group along.
                self._group_ready = False
                continue
            entries: list[tuple[bytes, dict[bytes, bytes] | None]] = reply[0][1] if reply else []
            if cursor != ">" and not entries:
                cursor = ">"
                continue
            for raw_id, fields in entries:
                entry_id = raw_id.decode()
                if cursor != ">":
                    cursor = entry_id
                delivery = await self._decode(entry_id, fields)
                if delivery is not None:
                    yield delivery

    async def _decode(self, entry_id: str, fields: dict[bytes, bytes] | None) -> Delivery | None:
        request_id = (fields or {}).get(b"q")
        if request_id is not None and is_key_part(request_id.decode(errors="replace")):
            return Delivery(entry_id=entry_id, request_id=request_id.decode())
        raw = (fields or {}).get(b"r")
        if raw is None:  # trimmed while pending (or planted): nothing left to deliver
            await self._ack_ids([entry_id])
            return None
        try:
            return Delivery(entry_id=entry_id, job_result=JobResult.from_json(raw))
        except MalformedMessage as exc:
            log.warning("dropping malformed result %s: %s", entry_id, exc)
            await self._ack_ids([entry_id])
            return None

    async def ack(self, *deliveries: Delivery) -> None:
        """Acknowledge handled results; they are not delivered again."""
        await self._ack_ids([d.entry_id for d in deliveries])

    async def _ack_ids(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        stream = self._keys.results(self.instance_id)
        with redis_boundary():
            pipe = self._redis.pipeline(transaction=False)
            pipe.xack(stream, RESULTS_GROUP, *entry_ids)
            pipe.xdel(stream, *entry_ids)  # handled: free the memory now, not at trim time
            await pipe.execute()
