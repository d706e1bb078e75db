"""Typed Python wrappers around the queue's server-side Lua scripts.

Every change to the queue's structure happens inside one of these scripts, so each is
atomic: submission with its caps, fair batched dispatch with leases, lease extension,
the reaper, handing jobs back, publishing a result, cancelling, and status. The scripts
live next to this module as `queue_*.lua`; each is sent with the key builders from
`inference.keys` and the helpers in `queue_lib.lua` prepended.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from inference.keys import Keys, lua_prelude

# How many users whose next job a worker cannot serve one `take` looks past. A blocked
# user holds at least one pending job, so with the default per-guild cap (100) this
# passes over several fully blocked guilds, at a few Redis commands each.
MAX_SKIP = 1_024

_SCRIPT_NAMES = ("submit", "take", "extend", "reap", "release", "settle", "cancel", "status")


@cache
def script_source(name: str) -> str:
    """The full Lua text of script `name`, with the key builders and helpers prepended."""
    pkg = resources.files("inference")
    lib = pkg.joinpath("queue_lib.lua").read_text(encoding="utf-8")
    body = pkg.joinpath(f"queue_{name}.lua").read_text(encoding="utf-8")
    return lua_prelude() + lib + body


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
    enqueued_at: float | None = None  # server clock, for queue-wait timing


@dataclass(frozen=True, slots=True)
class Taken:
    """What one `take` call leased, and the server time it did so."""

    now: float
    jobs: list[TakenJob]


class Scripts:
    """The queue's Lua scripts bound to one Redis client and key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = {n: redis.register_script(script_source(n)) for n in _SCRIPT_NAMES}

    async def _call(self, name: str, *args: Any, client: Pipeline | None = None) -> Any:
        # KEYS[1] only routes the call on a cluster; the scripts build keys from the prefix.
        keys = [self._keys.guild_ring]
        return await self._scripts[name](keys, [self._keys.prefix, *args], client=client)

    async def submit(
        self,
        job_id: str,
        data: str,
        *,
        guild: str,
        user: str,
        task: str,
        deadline_at: float,
        image: bytes,
        image_ttl_s: int,
        max_pending: int,
        max_guild: int,
        max_user: int,
        require_worker: bool,
    ) -> tuple[str, int]:
        """Queue a job if the caps allow; (status, place), status 'ok' or an error code."""
        status, place = await self._call(
            "submit", job_id, data, guild, user, task, repr(deadline_at), image,
            image_ttl_s, max_pending, max_guild, max_user, int(require_worker),
        )  # fmt: skip
        return _text(status), int(place)

    async def take(
        self,
        worker_id: str,
        batch_size: int,
        lease_s: float,
        capabilities: str,
        max_scan: int,
        *,
        max_skip: int = MAX_SKIP,
    ) -> Taken:
        """Lease up to `batch_size` jobs, fairly; expired ones come extra, flagged."""
        raw = await self._call(
            "take", worker_id, batch_size, lease_s, capabilities, max_scan, max_skip
        )
        jobs = [
            TakenJob(
                job_id=_text(raw[i]),
                data=raw[i + 1],
                attempt=int(raw[i + 2]),
                expired=int(raw[i + 3]) == 1,
                enqueued_at=_seconds(raw[i + 4]),
            )
            for i in range(1, len(raw), 5)
        ]
        return Taken(now=float(raw[0]), jobs=jobs)

    async def extend(self, worker_id: str, lease_s: float, job_ids: list[str]) -> list[str]:
        """Extend this worker's leases; returns the ids it lost."""
        lost = await self._call("extend", worker_id, lease_s, *job_ids)
        return [_text(j) for j in lost]

    async def reap(
        self, reaper_id: str, max_attempts: int, lease_s: float, limit: int
    ) -> tuple[int, list[TakenJob]]:
        """Requeue lapsed leases; returns (requeued count, jobs out of attempts)."""
        raw = await self._call("reap", reaper_id, max_attempts, lease_s, limit)
        dying = [
            TakenJob(job_id=_text(raw[i]), data=raw[i + 1], attempt=int(raw[i + 2]))
            for i in range(1, len(raw), 3)
        ]
        return int(raw[0]), dying

    async def release(self, worker_id: str, job_ids: list[str]) -> int:
        """Hand unstarted jobs back to the front of their lines."""
        if not job_ids:
            return 0
        return int(await self._call("release", worker_id, *job_ids))

    async def settle(
        self,
        job_id: str,
        *,
        reply_to: str | None,
        result_json: str,
        done_ttl_s: int,
        retention_ms: int,
        dead_letter: str | None = None,
        max_dead_letters: int = 10_000,
        client: Pipeline | None = None,
    ) -> Any:
        """Publish a job's outcome once (1 if this call published) and clean the job up."""
        return await self._call(
            "settle", job_id, reply_to or "", result_json, done_ttl_s, retention_ms,
            dead_letter or "", max_dead_letters, client=client,
        )  # fmt: skip

    async def cancel(self, job_id: str, done_ttl_s: int) -> str:
        """Cancel a job: 'cancelled', 'running' (its result is dropped) or 'unknown'."""
        return _text(await self._call("cancel", job_id, done_ttl_s))

    async def status(self, job_id: str) -> tuple[str, int]:
        """(state, place in line); place is 0 unless the state is 'queued'."""
        state, place = await self._call("status", job_id)
        return _text(state), int(place)
