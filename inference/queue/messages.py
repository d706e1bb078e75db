"""The queue's wire types: `Job` (bot → worker), `JobResult` (worker → bot), `WorkerInfo`
(a worker's heartbeat record) and `JobState`.

Torch-free; the bot imports this. All are frozen dataclasses with an explicit, versioned
JSON form. Redis is a trust boundary between two separately deployed programs, so
decoding never uses pickle, checks every field's type, and turns any problem into
`MalformedMessage` instead of a KeyError deep inside a worker.

The image is not part of the job message: the client stores it in its own key with a
TTL (see `inference.queue.client`), so a job message stays small and Lua can move it
cheaply. A result may carry a display-sized copy of it (`inference.display`), a field
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
from inference.queue.keys import DM_GUILD, check_part
from inference.tasks import NOTE_FIELD, InferenceResult, Task, TaskSpec

JOB_SCHEMA_VERSION = 1
RESULT_SCHEMA_VERSION = 1
MAX_CONTEXT_ITEMS = 16
MAX_CONTEXT_CHARS = 512
WORKER_SCHEMA_VERSION = 1


class JobState(enum.StrEnum):
    """Where a job is, as the queue's status script reports it."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


def _load_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: deeply nested arrays (`[[[[...`) exhaust the decoder's stack.
        raise MalformedMessage(f"The {what} is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise MalformedMessage(f"The {what} is not a JSON object.")
    return data


def _get(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    # bool is an int subclass; a boolean where a number belongs is a bug upstream.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedMessage(f"Field {name!r} is missing or has the wrong type.")
    return value


def _get_opt(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return None if data.get(name) is None else _get(data, name, kind)


def _get_float(data: Mapping[str, Any], name: str) -> float:
    try:
        return float(_get(data, name, (int, float)))
    except OverflowError as exc:  # a JSON integer too large for a float: 1 followed by 400 zeros
        raise MalformedMessage(f"Field {name!r} is out of range.") from exc


def _opt_float(data: Mapping[str, Any], name: str) -> float | None:
    return None if data.get(name) is None else _get_float(data, name)


def _opt_task(data: Mapping[str, Any]) -> Task | None:
    # A task this version does not know (a newer worker's) still delivers its answer.
    name = _get_opt(data, "task", str)
    return Task(name) if name in Task.__members__.values() else None


def _check_context(context: Mapping[str, Any]) -> dict[str, str]:
    if len(context) > MAX_CONTEXT_ITEMS:
        raise MalformedMessage("The job context has too many items.")
    out: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise MalformedMessage("The job context must map strings to strings.")
        if len(key) + len(value) > MAX_CONTEXT_CHARS:
            raise MalformedMessage("A job context item is too long.")
        out[key] = value
    return out


def _check_version(data: Mapping[str, Any], expected: int, what: str) -> None:
    version = data.get("v")
    if version != expected:
        raise MalformedMessage(f"Unsupported {what} schema version {version!r}.")


def _key_part(value: str, name: str) -> str:
    try:
        return check_part(value)
    except ValueError as exc:
        raise MalformedMessage(f"Field {name!r} is not a valid id.") from exc


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
    v: int = JOB_SCHEMA_VERSION

    def __post_init__(self) -> None:
        for name in ("job_id", "guild_id", "user_id", "reply_to"):
            _key_part(getattr(self, name), name)
        _check_context(self.context)

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
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        """Decode and validate; raises MalformedMessage, or a RequestError for a bad task."""
        data = _load_object(raw, "job message")
        _check_version(data, JOB_SCHEMA_VERSION, "job")
        objects = _get(data, "objects", list)
        if not all(isinstance(o, str) for o in objects):
            raise MalformedMessage("Field 'objects' must be a list of strings.")
        # Re-validate through TaskSpec.build: the sender's checks do not count here.
        spec = TaskSpec.build(
            _get(data, "task", str),
            language=_get(data, "language", str),
            question=_get_opt(data, "question", str),
            objects=objects or None,
            max_new_tokens=_get_opt(data, "max_new_tokens", int),
        )
        return cls(
            job_id=_get(data, "job_id", str),
            spec=spec,
            guild_id=_get(data, "guild_id", str),
            channel_id=_get_opt(data, "channel_id", str),
            user_id=_get(data, "user_id", str),
            reply_to=_get(data, "reply_to", str),
            created_at=_get_float(data, "created_at"),
            deadline_at=_get_float(data, "deadline_at"),
            context=_check_context(_get(data, "context", dict)),
            attempt=_get(data, "attempt", int),
        )


def salvage_reply_address(raw: str | bytes) -> tuple[str, str, dict[str, str]] | None:
    """(job_id, reply_to, context) from a job message too broken to decode, if present."""
    try:
        data = _load_object(raw, "job message")
        job_id = _key_part(_get(data, "job_id", str), "job_id")
        reply_to = _key_part(_get(data, "reply_to", str), "reply_to")
    except MalformedMessage:
        return None
    try:
        context = _check_context(_get(data, "context", dict))
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
        data = _load_object(raw, "job result")
        _check_version(data, RESULT_SCHEMA_VERSION, "result")
        raw_dets = _get(data, "detections", list)
        if not all(isinstance(d, dict) for d in raw_dets):
            raise MalformedMessage("Field 'detections' must be a list of objects.")
        return cls(
            job_id=_get(data, "job_id", str),
            context=_check_context(_get(data, "context", dict)),
            task=_opt_task(data),
            text=_get(data, "text", str),
            detections=tuple(Detection.from_dict(d) for d in raw_dets),
            error=_get_opt(data, "error", str),
            message=_get_opt(data, "message", str),
            worker_id=_get_opt(data, "worker_id", str),
            attempt=_get(data, "attempt", int),
            queue_wait_s=_opt_float(data, "queue_wait_s"),
            run_s=_opt_float(data, "run_s"),
            finished_at=_get_float(data, "finished_at"),
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
        data = _load_object(raw, "worker record")
        _check_version(data, WORKER_SCHEMA_VERSION, "worker")
        caps = _get(data, "capabilities", list)
        if not all(isinstance(c, str) for c in caps):
            raise MalformedMessage("Field 'capabilities' must be a list of strings.")
        return cls(
            worker_id=_get(data, "worker_id", str),
            host=_get(data, "host", str),
            model_id=_get(data, "model_id", str),
            capabilities=tuple(caps),
            started_at=_get_float(data, "started_at"),
            batch_size=_get(data, "batch_size", int),
        )
