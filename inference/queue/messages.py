"""The queue's wire types: `Job` (bot → worker), `JobResult` (worker → bot), `WorkerInfo`
(a worker's heartbeat record) and `JobState`.

Torch-free; the bot imports this. All are frozen dataclasses with an explicit, versioned
JSON form, decoded with the checks of `inference.queue.decoding` (Redis is a trust
boundary: any problem is a `MalformedMessage`, never a KeyError deep inside a worker).

The picture is not part of the job message: a job names it by digest (`picture`), and
the picture is kept once, in the store both programs share (`inference.queue.memory`),
however many jobs and follow-ups use it; a job of a request (`request_id`, `index`)
settles into that request's record (`inference.queue.records`) instead of reaching the
bot alone. Version 1 jobs (the previous release's: picture under `img:<job>`, the reply
address in the context) are still read, so an upgrade loses nothing queued.

A result may carry a display-sized copy of the picture (`inference.display`), a field
older bots ignore and older workers leave out: it needs no new schema version.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inference.detection import Detection
from inference.display import DisplayPicture
from inference.errors import MalformedMessage, PalicordError, error_from_code
from inference.queue.decoding import (
    check_context,
    check_version,
    get,
    get_float,
    get_opt,
    key_part,
    load_object,
    opt_float,
)
from inference.queue.keys import DM_GUILD
from inference.tasks import NOTE_FIELD, InferenceResult, Task, TaskSpec

JOB_SCHEMA_VERSION = 2
JOB_SCHEMA_VERSIONS = (1, 2)  # read; 1: the previous release's, see the module doc
RESULT_SCHEMA_VERSION = 1
# Items (pictures, or alt text's descriptions and readings) of one request.
MAX_REQUEST_ITEMS = 64
WORKER_SCHEMA_VERSION = 1


class JobState(enum.StrEnum):
    """Where a job is, as the queue's status script reports it."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


def _opt_task(data: Mapping[str, Any]) -> Task | None:
    # A task this version does not know (a newer worker's) still delivers its answer.
    name = get_opt(data, "task", str)
    return Task(name) if name in Task.__members__.values() else None


@dataclass(frozen=True, slots=True)
class Job:
    """One request in line: what to run, for whom, and where its result goes."""

    job_id: str
    spec: TaskSpec
    guild_id: str  # a Discord snowflake as text, or DM_GUILD
    channel_id: str | None
    user_id: str
    reply_to: str  # the bot instance whose results stream gets the answer
    created_at: float  # epoch seconds
    deadline_at: float  # epoch seconds; not started after this, the job times out
    context: dict[str, str] = field(default_factory=dict)  # opaque to the queue
    attempt: int = 0  # 1 on the first run; set by the queue, not by the sender
    picture: str | None = None  # the picture's digest; None: a version 1 job's own key
    request_id: str | None = None  # the request whose record this job's outcome joins
    index: int = 0  # which of the request's items
    v: int = JOB_SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("job_id", "guild_id", "user_id", "reply_to"):
            key_part(getattr(self, name), name)
        for name in ("picture", "request_id"):
            if getattr(self, name) is not None:
                key_part(getattr(self, name), name)
        if not 0 <= self.index < MAX_REQUEST_ITEMS:
            raise MalformedMessage("Field 'index' is out of range.")
        check_context(self.context)

    @classmethod
    def new(
        cls,
        spec: TaskSpec,
        *,
        guild_id: int | str | None,
        user_id: int | str,
        reply_to: str,
        deadline_s: float,
        channel_id: int | str | None = None,
        context: Mapping[str, str] | None = None,
        now: float | None = None,
        job_id: str | None = None,
        picture: str | None = None,
        request_id: str | None = None,
        index: int = 0,
    ) -> Job:
        """A fresh job (a random id unless given), created now, due `deadline_s` from now."""
        created = time.time() if now is None else now
        return cls(
            job_id=job_id or uuid.uuid4().hex,
            spec=spec,
            guild_id=DM_GUILD if guild_id is None else str(guild_id),
            channel_id=None if channel_id is None else str(channel_id),
            user_id=str(user_id),
            reply_to=reply_to,
            created_at=created,
            deadline_at=created + deadline_s,
            context=dict(context or {}),
            picture=picture,
            request_id=request_id,
            index=index,
        )

    def to_json(self) -> str:
        """Versioned JSON form (snowflakes as strings: Lua and JS lose precision on them)."""
        return json.dumps(
            {
                "v": self.v,
                "job_id": self.job_id,
                "task": self.spec.task.value,
                "language": self.spec.language,
                "question": self.spec.question,
                "objects": list(self.spec.objects),
                "max_new_tokens": self.spec.max_new_tokens,
                "guild_id": self.guild_id,
                "channel_id": self.channel_id,
                "user_id": self.user_id,
                "reply_to": self.reply_to,
                "context": self.context,
                "created_at": self.created_at,
                "deadline_at": self.deadline_at,
                "attempt": self.attempt,
                "picture": self.picture,
                "request_id": self.request_id,
                "index": self.index,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        """Decode and validate; raises MalformedMessage, or a RequestError for a bad task."""
        data = load_object(raw, "job message")
        check_version(data, JOB_SCHEMA_VERSIONS, "job")
        objects = get(data, "objects", list)
        if not all(isinstance(o, str) for o in objects):
            raise MalformedMessage("Field 'objects' must be a list of strings.")
        # Re-validate through TaskSpec.build: the sender's checks do not count here.
        spec = TaskSpec.build(
            get(data, "task", str),
            language=get(data, "language", str),
            question=get_opt(data, "question", str),
            objects=objects or None,
            max_new_tokens=get_opt(data, "max_new_tokens", int),
        )
        return cls(
            job_id=get(data, "job_id", str),
            spec=spec,
            guild_id=get(data, "guild_id", str),
            channel_id=get_opt(data, "channel_id", str),
            user_id=get(data, "user_id", str),
            reply_to=get(data, "reply_to", str),
            created_at=get_float(data, "created_at"),
            deadline_at=get_float(data, "deadline_at"),
            context=check_context(get(data, "context", dict)),
            attempt=get(data, "attempt", int),
            picture=get_opt(data, "picture", str),
            request_id=get_opt(data, "request_id", str),
            index=get_opt(data, "index", int) or 0,
        )


def salvage_reply_address(raw: str | bytes) -> tuple[str, str, dict[str, str]] | None:
    """(job_id, reply_to, context) from a job message too broken to decode, if present."""
    try:
        data = load_object(raw, "job message")
        job_id = key_part(get(data, "job_id", str), "job_id")
        reply_to = key_part(get(data, "reply_to", str), "reply_to")
    except MalformedMessage:
        return None
    try:
        context = check_context(get(data, "context", dict))
    except MalformedMessage:
        context = {}
    return job_id, reply_to, context


@dataclass(frozen=True, slots=True)
class JobResult:
    """The one outcome of a job: an answer, or an error code with a user-facing message."""

    job_id: str
    context: dict[str, str]  # echoed from the job, so the bot knows where to reply
    task: Task | None = None
    text: str = ""
    detections: tuple[Detection, ...] = ()
    error: str | None = None  # an errors.PalicordError code
    message: str | None = None  # the user-facing error message
    worker_id: str | None = None
    attempt: int = 0
    queue_wait_s: float | None = None
    run_s: float | None = None
    finished_at: float = 0.0
    display: DisplayPicture | None = field(default=None, repr=False)
    v: int = RESULT_SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        return self.error is None

    def exception(self) -> PalicordError | None:
        """The typed error this result carries, or None when it succeeded."""
        return None if self.error is None else error_from_code(self.error, self.message)

    @classmethod
    def success(
        cls,
        job: Job,
        result: InferenceResult,
        *,
        worker_id: str,
        queue_wait_s: float | None = None,
        run_s: float | None = None,
    ) -> JobResult:
        """Wrap an engine result (which may itself carry a per-request error)."""
        return cls(
            job_id=job.job_id,
            context=job.context | ({NOTE_FIELD: result.note} if result.note else {}),
            task=result.task,
            text=result.text,
            detections=tuple(result.detections),
            error=result.error,
            message=result.error_message,
            worker_id=worker_id,
            attempt=job.attempt,
            queue_wait_s=queue_wait_s,
            run_s=run_s,
            finished_at=time.time(),
            display=result.display if result.ok else None,
        )

    @classmethod
    def failure(
        cls,
        job_id: str,
        context: Mapping[str, str],
        error: PalicordError,
        *,
        task: Task | None = None,
        worker_id: str | None = None,
        attempt: int = 0,
        queue_wait_s: float | None = None,
    ) -> JobResult:
        """An error result carrying `error`'s code and user-facing message."""
        return cls(
            job_id=job_id,
            context=dict(context),
            task=task,
            error=error.code,
            message=error.message,
            worker_id=worker_id,
            attempt=attempt,
            queue_wait_s=queue_wait_s,
            finished_at=time.time(),
        )

    def to_json(self) -> str:
        """Versioned JSON form."""
        return json.dumps(
            {
                "v": self.v,
                "job_id": self.job_id,
                "context": self.context,
                "task": None if self.task is None else self.task.value,
                "text": self.text,
                "detections": [d.to_dict() for d in self.detections],
                "error": self.error,
                "message": self.message,
                "worker_id": self.worker_id,
                "attempt": self.attempt,
                "queue_wait_s": self.queue_wait_s,
                "run_s": self.run_s,
                "finished_at": self.finished_at,
                "display": None if self.display is None else self.display.to_dict(),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> JobResult:
        """Decode and validate; raises MalformedMessage."""
        data = load_object(raw, "job result")
        check_version(data, RESULT_SCHEMA_VERSION, "result")
        raw_dets = get(data, "detections", list)
        if not all(isinstance(d, dict) for d in raw_dets):
            raise MalformedMessage("Field 'detections' must be a list of objects.")
        return cls(
            job_id=get(data, "job_id", str),
            context=check_context(get(data, "context", dict)),
            task=_opt_task(data),
            text=get(data, "text", str),
            detections=tuple(Detection.from_dict(d) for d in raw_dets),
            error=get_opt(data, "error", str),
            message=get_opt(data, "message", str),
            worker_id=get_opt(data, "worker_id", str),
            attempt=get(data, "attempt", int),
            queue_wait_s=opt_float(data, "queue_wait_s"),
            run_s=opt_float(data, "run_s"),
            finished_at=get_float(data, "finished_at"),
            display=DisplayPicture.from_json_value(data.get("display")),
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker's heartbeat record: who it is and what its model can do."""

    worker_id: str
    host: str
    model_id: str
    capabilities: tuple[str, ...]
    started_at: float
    batch_size: int
    v: int = WORKER_SCHEMA_VERSION

    def to_json(self) -> str:
        """Versioned JSON form."""
        return json.dumps(
            {
                "v": self.v,
                "worker_id": self.worker_id,
                "host": self.host,
                "model_id": self.model_id,
                "capabilities": list(self.capabilities),
                "started_at": self.started_at,
                "batch_size": self.batch_size,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerInfo:
        """Decode and validate; raises MalformedMessage."""
        data = load_object(raw, "worker record")
        check_version(data, WORKER_SCHEMA_VERSION, "worker")
        caps = get(data, "capabilities", list)
        if not all(isinstance(c, str) for c in caps):
            raise MalformedMessage("Field 'capabilities' must be a list of strings.")
        return cls(
            worker_id=get(data, "worker_id", str),
            host=get(data, "host", str),
            model_id=get(data, "model_id", str),
            capabilities=tuple(caps),
            started_at=get_float(data, "started_at"),
            batch_size=get(data, "batch_size", int),
        )
