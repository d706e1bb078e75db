"""Turning taken jobs into their one outcome and publishing it (idempotently, via Lua)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass

from inference.errors import JobFailed, JobTimedOut, MalformedMessage, PalicordError
from inference.queue import Job, JobResult, QueueSettings
from inference.queue.messages import salvage_reply_address
from inference.queue.scripts import Scripts, Settlement, TakenJob
from inference.settings import WorkerSettings

log = logging.getLogger(__name__)

DEAD_LETTER_DATA_CHARS = 4_096  # enough to debug a payload, not enough to bloat Redis
REAP_LIMIT = 100  # lapsed leases handled per reaper pass; the rest wait for the next one
# What answers a job (the interaction token, webhook addresses) never goes to the dead
# letters: kept for days, it would let whoever reads Redis answer in the user's place.
_TOKEN_RE = re.compile(rb'"(token|context)"\s*:\s*("(?:[^"\\]|\\.)*"|\{[^}]*\})')


def _without_reply_context(raw: bytes) -> bytes:
    """The job's JSON without its `context` (where the interaction token is); a payload
    that is not JSON loses anything that looks like a token or a context instead."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # nested past Python's limit: planted, not JSON
        return _TOKEN_RE.sub(rb'"\1":"(removed)"', raw)
    if isinstance(data, dict):
        data.pop("context", None)
        data.pop("token", None)
        return json.dumps(data, separators=(",", ":")).encode()
    return raw


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decided result for one taken job; `reply_to` None means nobody can be told."""

    job_id: str
    reply_to: str | None
    result: JobResult | None
    dead_letter_reason: str | None = None
    raw: bytes = b""


def decode(taken: TakenJob, worker_id: str) -> Job | Outcome:
    """The job, or the error outcome that answers it when its message cannot be used."""
    try:
        job = Job.from_json(taken.data)
    except MalformedMessage as exc:
        log.warning("dead-lettering malformed job %s: %s", taken.job_id, exc)
        return _undecodable(taken, exc, worker_id, "malformed")
    except PalicordError as exc:  # a well-formed message with invalid task parameters
        return _undecodable(taken, exc, worker_id, None)
    except Exception:
        # Redis is a trust boundary: a payload that trips an unforeseen bug in decoding
        # must cost one dead letter, not a worker (every worker would crash on it in turn).
        log.exception("dead-lettering job %s: its message could not be decoded", taken.job_id)
        return _undecodable(taken, MalformedMessage(), worker_id, "malformed")
    if job.job_id != taken.job_id:
        mismatch = MalformedMessage("The job message does not match its queue entry.")
        result = JobResult.failure(taken.job_id, job.context, mismatch, worker_id=worker_id)
        return Outcome(taken.job_id, job.reply_to, result, "malformed", taken.data)
    return dataclasses.replace(job, attempt=taken.attempt)


def _undecodable(
    taken: TakenJob, error: PalicordError, worker_id: str, dead_letter_reason: str | None
) -> Outcome:
    """An error outcome for a job whose message could not be decoded, sent to whatever
    reply address can be salvaged from it (nobody, if none)."""
    address = salvage_reply_address(taken.data)
    reply_to, context = (address[1], address[2]) if address else (None, {})
    result = JobResult.failure(taken.job_id, context, error, worker_id=worker_id)
    raw = taken.data if dead_letter_reason else b""
    return Outcome(taken.job_id, reply_to, result, dead_letter_reason, raw)


def failure(
    job: Job,
    error: PalicordError,
    *,
    worker_id: str,
    queue_wait_s: float | None = None,
    dead_letter_reason: str | None = None,
    raw: bytes = b"",
) -> Outcome:
    """An error outcome for a decoded job."""
    result = JobResult.failure(
        job.job_id,
        job.context,
        error,
        task=job.spec.task,
        worker_id=worker_id,
        attempt=job.attempt,
        queue_wait_s=queue_wait_s,
    )
    return Outcome(job.job_id, job.reply_to, result, dead_letter_reason, raw)


def out_of_attempts(taken: TakenJob, worker_id: str) -> Outcome:
    """The outcome for a job whose leases lapsed too often: dead letter and JobFailed."""
    decoded = decode(taken, worker_id)
    if isinstance(decoded, Outcome):
        if decoded.dead_letter_reason:
            return decoded
        return dataclasses.replace(decoded, dead_letter_reason="max_attempts", raw=taken.data)
    return failure(
        decoded, JobFailed(), worker_id=worker_id, dead_letter_reason="max_attempts", raw=taken.data
    )


def timed_out(job: Job, *, worker_id: str, queue_wait_s: float | None) -> Outcome:
    """The outcome for a job taken after its deadline."""
    return failure(job, JobTimedOut(), worker_id=worker_id, queue_wait_s=queue_wait_s)


def _dead_letter_entry(outcome: Outcome, worker_id: str) -> str | None:
    if outcome.dead_letter_reason is None:
        return None
    return json.dumps(
        {
            "job_id": outcome.job_id,
            "reason": outcome.dead_letter_reason,
            "worker_id": worker_id,
            "at": time.time(),
            "data": _without_reply_context(outcome.raw)[:DEAD_LETTER_DATA_CHARS].decode(
                "utf-8", "replace"
            ),
        },
        separators=(",", ":"),
    )


async def publish(
    scripts: Scripts,
    outcomes: list[Outcome],
    settings: QueueSettings,
    worker_id: str,
) -> list[Outcome]:
    """Settle every outcome in one round trip; returns those this call decided (another
    worker may have settled a job first: it was robbed). Raises QueueUnavailable when
    Redis fails (settling again later is safe)."""
    if not outcomes:
        return []
    decided = await scripts.settle_many(
        [
            (
                o.job_id,
                Settlement(
                    result_json=o.result.to_json() if o.result is not None else "",
                    reply_to=o.reply_to if o.result is not None else None,
                    done_ttl_s=settings.done_ttl_s,
                    retention_ms=settings.result_retention_s * 1000,
                    dead_letter=_dead_letter_entry(o, worker_id),
                    max_dead_letters=settings.max_dead_letters,
                    dead_letter_ttl_s=settings.dead_letter_ttl_s,
                ),
            )
            for o in outcomes
        ]
    )
    return [o for o, reply in zip(outcomes, decided, strict=True) if reply == 1]


async def reap(
    scripts: Scripts,
    settings: WorkerSettings,
    worker_id: str,
    *,
    by_heartbeat: bool,
    presumed_dead: str,
) -> tuple[int, list[Outcome]]:
    """One reaper pass: lapsed jobs back in line, those out of attempts answered with
    JobFailed and dead-lettered. Returns how many went back in line, and the outcomes
    it published."""
    s = settings
    reaped = await scripts.reap(
        worker_id,
        s.max_attempts,
        s.lease_s,
        REAP_LIMIT,
        by_heartbeat=by_heartbeat,
        presumed_dead=presumed_dead,
    )
    if reaped.requeued:
        log.info("requeued %d jobs whose lease lapsed or whose worker died", reaped.requeued)
    dying = [out_of_attempts(tj, worker_id) for tj in reaped.dying]
    if dying:
        log.warning("dead-lettering %d jobs out of attempts", len(dying))
    return reaped.requeued, await publish(scripts, dying, s, worker_id)
