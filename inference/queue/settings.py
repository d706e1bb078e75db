"""Settings of the job queue, shared by both programs, and the image limits they both apply.

Each program builds exactly one settings object at its entry point (`BotSettings` in
`python -m bot`, `WorkerSettings` in `python -m inference.worker`, `EngineSettings` in the
offline CLI) from the environment and `.env`; all of them extend the classes here, so a
variable such as MAX_IMAGE_BYTES means one setting with one default everywhere.
`REDIS_URL` may hold a password, so it is a SecretStr and only `redacted_url()` is logged.

Entry points build their settings with `load_settings()`: a wrong setting then ends in one
`ConfigurationError` naming each wrong setting and what is wrong with it, never its value
(pydantic's own message quotes the inputs, and a cross-field error quotes all of them,
secrets included).
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from inference.errors import ConfigurationError
from inference.intake import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from inference.queue.keys import DEFAULT_PREFIX

_QUERY_PASSWORD_RE = re.compile(r"(?i)((?:^|&)password=)[^&]*")
# Redis Cluster hashes only the part between the first "{" and the next "}" (if not empty).
_HASH_TAG_RE = re.compile(r"^[^{]*\{[^}]+\}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")

S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """`cls` built from the environment, `.env` and `overrides`, or a ConfigurationError
    that names each wrong setting and what is wrong with it, never its value."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        # `from None`: the ValidationError (inputs and all) must not ride along as a cause.
        raise ConfigurationError(describe_errors(exc, cls)) from None
    except SettingsError as exc:  # pydantic-settings names the field, not the value
        raise ConfigurationError(str(exc)) from None


def describe_errors(exc: ValidationError, cls: type[BaseSettings]) -> str:
    """One line: `SETTING: what is wrong` for each error, from pydantic's location and
    message only (never `input`); a cross-field error names its settings itself."""
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = error["loc"]
        message = error["msg"].removeprefix("Value error, ")
        name = loc[0] if loc and isinstance(loc[0], str) else None
        problems.append(f"{_env_names(cls, name)}: {message}" if name else message)
    return "; ".join(problems)


def _env_names(cls: type[BaseSettings], name: str) -> str:
    """The environment variable(s) a field is read from: HF_OFFLINE/HF_HUB_OFFLINE."""
    field = cls.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices):
        return "/".join(c.upper() for c in alias.choices if isinstance(c, str))
    return name.upper()


def _redis_url_problem(url: str, cluster: bool) -> str | None:
    """What redis-py would refuse later in REDIS_URL (or what it would misread), in words
    that never quote the URL: a password with `/` or `@` in it ends up in the host or
    port, and the URL parser's own messages quote those."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError:
        return (
            "REDIS_URL is not a valid URL (characters such as / @ : # ? % in the password "
            "must be percent-encoded)"
        )
    if parts.scheme not in _REDIS_SCHEMES:
        return "REDIS_URL must start with redis://, rediss:// or unix://"
    query = parse_qs(parts.query)
    if parts.scheme == "unix":
        return "REDIS_CLUSTER cannot use a unix:// REDIS_URL" if cluster else None
    path = parts.path.strip("/")
    db = query["db"][0] if query.get("db") else path
    if db and not db.isdigit():
        return "REDIS_URL's database (its path, or ?db=) must be a number, such as /0"
    if cluster and not parts.hostname:
        return "REDIS_CLUSTER needs a REDIS_URL with the host of one of the cluster's nodes"
    if cluster and db and int(db) != 0:
        return (
            "REDIS_URL must not name a database other than 0 when REDIS_CLUSTER is true "
            "(a Redis Cluster has database 0 only)"
        )
    return None


def redact_url(url: str) -> str:
    """`url` with any password (in the authority or a `?password=` query) replaced by
    `***`, fit for a log line."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        # Split by hand: `hostname` would drop an IPv6 address's brackets, `port` can raise.
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = _QUERY_PASSWORD_RE.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class ImageLimits(BaseSettings):
    """What an image may weigh: the bot refuses bigger downloads, the queue bigger
    submissions, the engine bigger decodes, all by the same two numbers."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    max_image_bytes: int = Field(default=MAX_IMAGE_BYTES, ge=1)
    # The decompression-bomb guard: a small file may still decode to gigabytes.
    max_image_pixels: int = Field(default=MAX_IMAGE_PIXELS, ge=1)


class QueueSettings(ImageLimits):
    """Where the queue lives and how much it holds; shared by the bot and the workers."""

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")  # redis:// or rediss://
    # A Redis Cluster: REDIS_URL is then one start-up node, and the client finds the rest.
    # Every key shares the prefix's hash tag, so the whole queue lives in one slot (the
    # Lua scripts touch many keys at once); a cluster gives failover, not a bigger queue.
    redis_cluster: bool = False
    key_prefix: str = DEFAULT_PREFIX
    # Caps count outstanding jobs (queued or running).
    max_pending: int = Field(default=5_000, ge=1)
    max_pending_per_guild: int = Field(default=100, ge=1)
    max_pending_per_user: int = Field(default=5, ge=1)
    # The pictures of outstanding jobs, in bytes: the queue's share of Redis's maxmemory
    # (docs/operations.md). Over it, submissions are refused "busy, try again in a moment".
    max_queued_bytes: int = Field(default=1 << 30, ge=1)
    # Discord interaction tokens last 15 minutes; a later answer could not be delivered.
    job_deadline_s: float = Field(default=14 * 60, gt=0)
    # Longer than any job can live (deadline + one last lease), so it never expires early.
    image_ttl_s: int = Field(default=30 * 60, ge=1)
    # A job's "done" marker must outlive every retry of it, or a retry could answer twice.
    done_ttl_s: int = Field(default=2 * 3600, ge=1)
    # Results older than this are trimmed from the streams, acknowledged or not.
    result_retention_s: int = Field(default=3600, ge=60)
    # A worker silent this long counts as dead: the bot no longer counts it, and its jobs
    # go back in line at the next reaper pass (REAP_INTERVAL_S) of any live worker. It
    # refreshes its heartbeat four times per lifetime, even in the middle of a batch.
    worker_heartbeat_ttl_s: float = Field(default=3.0, gt=0)
    max_dead_letters: int = Field(default=10_000, ge=1)
    # Dead letters (jobs that could not be run, kept to debug them) older than this go.
    dead_letter_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Pictures kept for follow-ups (buttons, replies to an answer) and answers kept for
    # identical requests (inference.queue.memory), each within its own Redis budget.
    picture_ttl_s: int = Field(default=24 * 3600, ge=60)
    picture_store_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    result_cache_ttl_s: int = Field(default=24 * 3600, ge=0)  # 0: no result cache
    result_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # A Redis that accepts connections but stops answering fails each command after this
    # long instead of hanging it (and the user's request with it). Blocking reads are
    # kept shorter than this (see QueueClient.results and WorkerSettings.idle_wait_s).
    redis_timeout_s: float = Field(default=15.0, gt=0)
    # Metrics and health (inference.ops): unset means the program's own port (bot 9101,
    # worker 9102), so both can run on one host; 0 turns the endpoints off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # "json": one JSON object per log line, with the job and request ids (inference.ops).
    log_format: Literal["text", "json"] = "text"

    # Cross-field errors have no location, so their messages name the settings (as
    # environment variables) themselves, and never quote a value.
    @model_validator(mode="after")
    def _one_slot_on_a_cluster(self) -> QueueSettings:
        if self.redis_cluster and not _HASH_TAG_RE.search(self.key_prefix):
            raise ValueError(
                "on a Redis Cluster KEY_PREFIX must hold a hash tag such as {palicord}, "
                "so that all of the queue's keys land in one slot"
            )
        return self

    @model_validator(mode="after")
    def _url_redis_py_accepts(self) -> QueueSettings:
        # Refused here, in words, rather than by redis-py at the first connection, in a
        # traceback (RedisClusterException for a database number on a cluster).
        problem = _redis_url_problem(self.redis_url.get_secret_value(), self.redis_cluster)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _image_outlives_its_job(self) -> QueueSettings:
        # A job may start up to its deadline; an image gone by then fails the job.
        if self.image_ttl_s <= self.job_deadline_s:
            raise ValueError("IMAGE_TTL_S must be longer than JOB_DEADLINE_S")
        # Every queued picture is kept in the picture store: the largest must fit it.
        if self.picture_store_max_bytes < self.max_image_bytes:
            raise ValueError("PICTURE_STORE_MAX_BYTES must be at least MAX_IMAGE_BYTES")
        return self

    def secrets(self) -> tuple[str, ...]:
        """The secret values these settings hold (the Redis password), for log filters."""
        parts = urlsplit(self.redis_url.get_secret_value())
        found = [parts.password or "", *parse_qs(parts.query).get("password", [])]
        return tuple({v for p in found if p for v in (p, unquote(p))})

    def redacted_url(self) -> str:
        """The Redis URL with its password hidden."""
        return redact_url(self.redis_url.get_secret_value())
