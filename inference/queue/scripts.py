"""Typed Python wrappers around the queue's server-side Lua scripts (in `lua/`).

Every change to the queue's structure happens inside one of these scripts, so each is
atomic: submission with its caps, fair batched dispatch with leases, lease extension,
marking a batch started, the reaper, handing jobs back, publishing a result, cancelling,
status, and the bot's daily quota. Each script is sent with a generated prelude (the key
builders of `inference.queue.keys`, and the error codes and states below as Lua tables)
and the helpers in `lua/lib.lua`, so the Lua never spells a key name, an error code or a
state of its own. Script replies are decoded here into typed values; callers never see
Redis's nested arrays.

Redis at its `maxmemory` (with `noeviction`) refuses writes. The scripts that let the
queue drain and so free memory (take, begin, extend, reap, release, settle, cancel, and
the workers' heartbeat, and recording a request's outcome)
declare `#!lua flags=allow-oom` (Redis 7 script flags): finishing, cancelling or expiring
a job unpins its picture, which the store may then drop. submit, open, stash and charge
do not: new pictures and counters are refused ("busy") until there is room again.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from inference.errors import error_types
from inference.queue.connection import is_cluster, redis_boundary
from inference.queue.keys import Keys, lua_prelude
from inference.queue.messages import JobState
from inference.tasks import Task

# How many users whose next job a worker cannot serve one `take` looks past. A blocked
# user holds at least one pending job, so with the default per-guild cap (100) this
# passes over several fully blocked guilds, at a few Redis commands each.
MAX_SKIP = 1_024

_SCRIPT_NAMES = (
    "submit", "take", "begin", "extend", "reap", "release", "settle", "cancel", "status",
    "charge", "clock", "stash", "beat", "open", "record",
)  # fmt: skip

# Crashes a job may be part of before it runs alone (docs/reliability.md, "Blame"): one
# crash is usually nobody's fault and costs one batch; a job in two is isolated.
ISOLATE_AFTER_CRASHES = 2


def isolate_after(max_attempts: int) -> int:
    """Crashes after which a job runs alone: ISOLATE_AFTER_CRASHES, lowered so that a job
    that crashes every batch still crashes alone by its `max_attempts`-th crash."""
    return max(1, min(ISOLATE_AFTER_CRASHES, max_attempts - 1))


class SubmitStatus(enum.StrEnum):
    """What `submit` did when it did not refuse with an error code."""

    OK = "ok"
    DUPLICATE = "duplicate"


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"  # taken out of the line
    RUNNING = "running"  # a worker has it; its result will be dropped
    UNKNOWN = "unknown"  # already answered, or no such job


def _lua_table(name: str, values: Iterable[str]) -> str:
    items = ", ".join(f"{v}='{v}'" for v in sorted(values))
    return f"local {name} = {{{items}}}\n"


def constants_prelude() -> str:
    """Lua tables of the protocol's words, generated from their Python definitions:
    `E` (error codes, from `inference.errors`), `State` (JobState), `Submit` (SubmitStatus)
    and `Cancel` (CancelOutcome)."""
    return (
        _lua_table("E", {cls.code for cls in error_types()})
        + _lua_table("State", (s.value for s in JobState))
        + _lua_table("Submit", (s.value for s in SubmitStatus))
        + _lua_table("Cancel", (c.value for c in CancelOutcome))
    )


def lua_file(name: str) -> str:
    """The text of `lua/<name>.lua` as shipped in the package."""
    path = resources.files("inference.queue").joinpath("lua", f"{name}.lua")
    return path.read_text(encoding="utf-8")


@cache
def script_source(name: str) -> str:
    """The full Lua text of script `name`: the generated preludes, the helpers, the body.
    A body's `#!lua flags=...` line (Redis 7) must open the script, so it goes first."""
    body = lua_file(name)
    shebang = ""
    if body.startswith("#!lua"):
        shebang, _, body = body.partition("\n")
        shebang += "\n"
    return shebang + lua_prelude() + constants_prelude() + lua_file("lib") + body


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(value: Any) -> float | None:
    # The job hash is plain Redis data: a planted non-number must not crash a worker.
    try:
        return float(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TakenJob:
    """One job leased by `take` or `reap`: its raw message (maybe malformed) and lease data."""

    job_id: str
    data: bytes
    attempt: int
    expired: bool = False
    queue_wait_s: float | None = None  # from queued to taken, by the server's clock
    isolated: bool = False  # a suspect, taken alone: it was in several crashed batches

    @classmethod
    def from_reply(cls, row: list[Any], now: float | None = None) -> TakenJob:
        """One `{jid, data, attempt, expired, enqueued_at[, isolated]}` row of a reply
        (`now`: the server's time of the call, for the wait)."""
        job_id, data, attempt, expired, enqueued_at, *rest = row
        queued_at = _seconds(enqueued_at)
        wait_s = None if queued_at is None or now is None else max(0.0, now - queued_at)
        return cls(
            job_id=_text(job_id),
            data=data,
            attempt=int(attempt),
            expired=int(expired) == 1,
            queue_wait_s=wait_s,
            isolated=bool(rest) and int(rest[0]) == 1,
        )


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one reaper pass did: jobs put back in line, and jobs out of attempts (now
    leased to the reaper, to be answered with an error and dead-lettered)."""

    requeued: int
    dying: list[TakenJob]


@dataclass(frozen=True, slots=True)
class Settlement:
    """How to settle one job: its result (or "" when there is none to publish), where to
    publish it, and what to dead-letter."""

    result_json: str
    reply_to: str | None
    done_ttl_s: int
    retention_ms: int
    dead_letter: str | None = None
    max_dead_letters: int = 10_000
    dead_letter_ttl_s: int = 7 * 24 * 3600


class Scripts:
    """The queue's Lua scripts bound to one Redis client and key prefix. Every call
    raises QueueUnavailable when Redis fails (see `inference.queue.connection`)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = {n: redis.register_script(script_source(n)) for n in _SCRIPT_NAMES}

    async def _call(self, name: str, *args: Any, client: Pipeline | None = None) -> Any:
        # KEYS[1] only routes the call on a cluster; the scripts build keys from the prefix.
        keys = [self._keys.guild_ring]
        with redis_boundary():
            return await self._scripts[name](keys, [self._keys.prefix, *args], client=client)

    async def submit(
        self,
        job_id: str,
        data: str,
        *,
        guild: str,
        user: str,
        task: Task,
        deadline_at: float,
        picture: str,
        image_ttl_s: int,
        max_pending: int,
        max_guild: int,
        max_user: int,
        require_worker: bool,
        max_queued_bytes: int,
        request: tuple[str, int] | None = None,
    ) -> tuple[str, int, bool]:
        """Queue a job on the kept `picture` (a digest) if the caps allow: (SubmitStatus
        or an error code, place in line, whether the place is exact). With `request`
        (id, item index), its outcome goes to that request's record."""
        request_id, index = request or ("", 0)
        status, place, *exact = await self._call(
            "submit", job_id, data, guild, user, task.value, repr(deadline_at), picture,
            image_ttl_s, max_pending, max_guild, max_user, int(require_worker), max_queued_bytes,
            request_id, index,
        )  # fmt: skip
        return _text(status), int(place), not exact or int(exact[0]) == 1

    async def take(
        self,
        worker_id: str,
        batch_size: int,
        lease_s: float,
        capabilities: Iterable[Task],
        max_scan: int,
        *,
        fresh: bool = True,
        max_skip: int = MAX_SKIP,
        isolate_after: int = ISOLATE_AFTER_CRASHES,
    ) -> list[TakenJob]:
        """Lease up to `batch_size` jobs, fairly; expired ones come extra, flagged. A job
        that was in `isolate_after` batches that took their worker down comes alone, and
        only to a `fresh` call (one that starts a batch): it may be what killed them."""
        caps = ",".join(sorted(t.value for t in capabilities))
        now, rows = await self._call(
            "take", worker_id, batch_size, lease_s, caps, max_scan, max_skip, int(fresh),
            isolate_after,
        )  # fmt: skip
        return [TakenJob.from_reply(row, float(now)) for row in rows]

    async def begin(self, worker_id: str, job_ids: list[str]) -> int:
        """Mark a batch as started on the engine (only started jobs share the blame if the
        worker dies now); returns how many this worker still held."""
        if not job_ids:
            return 0
        return int(await self._call("begin", worker_id, *job_ids))

    async def extend(self, worker_id: str, lease_s: float, job_ids: list[str]) -> list[str]:
        """Extend this worker's leases; returns the ids it lost."""
        lost = await self._call("extend", worker_id, lease_s, *job_ids)
        return [_text(j) for j in lost]

    async def reap(
        self,
        reaper_id: str,
        max_attempts: int,
        lease_s: float,
        limit: int,
        *,
        by_heartbeat: bool = True,
        presumed_dead: str = "",
    ) -> Reaped:
        """Requeue lapsed leases at the front of their lines, charging a crash to the jobs
        of a started batch; lease to the reaper the jobs that crashed `max_attempts` times,
        the last one alone. A lease also counts as lapsed when its owner's heartbeat is
        gone (`by_heartbeat`) or its owner is `presumed_dead`."""
        requeued, rows = await self._call(
            "reap", reaper_id, max_attempts, lease_s, limit, int(by_heartbeat), presumed_dead
        )
        return Reaped(requeued=int(requeued), dying=[TakenJob.from_reply(r) for r in rows])

    async def release(self, worker_id: str, job_ids: list[str]) -> int:
        """Hand unstarted jobs back to the front of their lines."""
        if not job_ids:
            return 0
        return int(await self._call("release", worker_id, *job_ids))

    async def settle(
        self, job_id: str, settlement: Settlement, *, client: Pipeline | None = None
    ) -> Any:
        """Decide a job's outcome once (1 if this call did, and published it where there is
        somewhere to answer) and clean the job up.
        With `client`, the call is queued on that pipeline and its reply comes from it."""
        s = settlement
        return await self._call(
            "settle", job_id, s.reply_to or "", s.result_json, s.done_ttl_s, s.retention_ms,
            s.dead_letter or "", s.max_dead_letters, s.dead_letter_ttl_s, client=client,
        )  # fmt: skip

    async def settle_many(self, settlements: Sequence[tuple[str, Settlement]]) -> list[int]:
        """`settle` each (job id, settlement), in one round trip where Redis allows it."""
        if is_cluster(self._redis):
            # redis-py's cluster pipeline refuses EVALSHA; the calls go out concurrently.
            replies = await asyncio.gather(*(self.settle(j, s) for j, s in settlements))
        else:
            with redis_boundary():
                pipe = self._redis.pipeline(transaction=False)
                for job_id, settlement in settlements:
                    await self.settle(job_id, settlement, client=pipe)
                replies = await pipe.execute()
        return [int(reply) for reply in replies]

    async def cancel(self, job_id: str, done_ttl_s: int) -> CancelOutcome:
        """Cancel a job."""
        return CancelOutcome(_text(await self._call("cancel", job_id, done_ttl_s)))

    async def open_request(
        self,
        request_id: str,
        data: str,
        *,
        items: int,
        reply_to: str,
        ttl_s: int,
        opening: str,
        opened_at: float,
    ) -> int:
        """Keep a request's record once (1; 0 if it exists already), listed as opening
        under instance `opening` (unless that is '') since `opened_at`."""
        args = (request_id, data, items, reply_to, ttl_s, opening, repr(opened_at))
        return int(await self._call("open", *args))

    async def record_outcome(
        self, request_id: str, index: int, result_json: str, retention_ms: int
    ) -> int:
        """Record an item's outcome that never became a job (1 if recorded)."""
        return int(await self._call("record", request_id, index, result_json, retention_ms))

    async def charge(
        self, day: str, n: int, quotas: Sequence[tuple[str, int]], *, ttl_s: int
    ) -> int:
        """Count `n` images for `day` against each (scope, quota), all or none: the first
        scope's new total, or -i (nothing counted) when they do not fit the i-th quota
        (1-based). A negative `n` refunds, never below zero."""
        flat = [part for scope, quota in quotas for part in (scope, quota)]
        return int(await self._call("charge", day, n, ttl_s, *flat))

    async def stash(
        self, kind: str, item_id: str, value: bytes | str, *, ttl_s: int, max_bytes: int
    ) -> int:
        """Keep `value` for `ttl_s` within `kind`'s byte budget (oldest dropped first);
        returns the kind's total bytes."""
        return int(await self._call("stash", kind, item_id, value, ttl_s, max_bytes))

    async def beat(
        self, worker_id: str, info_json: str, *, ttl_s: float, stale_s: float
    ) -> tuple[int, int, int]:
        """Write a worker's heartbeat; (jobs outstanding, guilds waiting, workers alive)."""
        pending, guilds, workers = await self._call("beat", worker_id, info_json, ttl_s, stale_s)
        return int(pending), int(guilds), int(workers)

    async def server_time(self) -> float:
        """Redis's clock, the one the scripts judge leases and heartbeats by."""
        seconds, micros = await self._call("clock")
        return int(seconds) + int(micros) / 1e6

    async def status(self, job_id: str) -> tuple[JobState, int, bool]:
        """(state, place in line, whether the place is exact); place is 0 unless the state
        is QUEUED. Costs the same however many guilds are waiting."""
        state, place, *exact = await self._call("status", job_id)
        return JobState(_text(state)), int(place), not exact or int(exact[0]) == 1
