"""Settings for the job queue (bot and worker) and the worker service.

Built once at an entry point from the environment and `.env`, then passed down.
`REDIS_URL` may hold a password, so it is a SecretStr and only `redacted_url()` is logged.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.keys import DEFAULT_PREFIX
from inference.settings import EngineSettings, MiB

_QUERY_PASSWORD_RE = re.compile(r"(?i)((?:^|&)password=)[^&]*")


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


class QueueSettings(BaseSettings):
    """Where the queue lives and how much it holds; shared by the bot and the workers."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")  # redis:// or rediss://
    key_prefix: str = DEFAULT_PREFIX
    # Caps count outstanding jobs (queued or running).
    max_pending: int = Field(default=5_000, ge=1)
    max_pending_per_guild: int = Field(default=100, ge=1)
    max_pending_per_user: int = Field(default=5, ge=1)
    # Images live in Redis while their job waits; this bounds Redis memory per job.
    max_image_bytes: int = Field(default=20 * MiB, ge=1)
    # Discord interaction tokens last 15 minutes; a later answer could not be delivered.
    job_deadline_s: float = Field(default=14 * 60, gt=0)
    # Longer than any job can live (deadline + one last lease), so it never expires early.
    image_ttl_s: int = Field(default=30 * 60, ge=1)
    # A job's "done" marker must outlive every retry of it, or a retry could answer twice.
    done_ttl_s: int = Field(default=2 * 3600, ge=1)
    # Results older than this are trimmed from the streams, acknowledged or not.
    result_retention_s: int = Field(default=3600, ge=60)
    worker_heartbeat_ttl_s: float = Field(default=15.0, gt=0)
    max_dead_letters: int = Field(default=10_000, ge=1)
    # A Redis that accepts connections but stops answering fails each command after this
    # long instead of hanging it (and the user's request with it). Blocking reads are
    # kept shorter than this (see QueueClient.results and WorkerSettings.idle_wait_s).
    redis_timeout_s: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _image_outlives_its_job(self) -> QueueSettings:
        # A job may start up to its deadline; an image gone by then fails the job.
        if self.image_ttl_s <= self.job_deadline_s:
            raise ValueError("image_ttl_s must be longer than job_deadline_s")
        return self

    def redacted_url(self) -> str:
        """The Redis URL with its password hidden."""
        return redact_url(self.redis_url.get_secret_value())


class WorkerSettings(QueueSettings):
    """The worker service: the queue settings, batching, leases, and the engine's."""

    worker_id: str | None = None  # default: <hostname>-<pid>-<random>
    batch_size: int = Field(default=8, ge=1, le=256)
    # Upper bound on waiting to fill a partial batch; the wait actually used is at most
    # `linger_ratio` of a recent batch's run time, so a fast engine never waits.
    linger_s: float = Field(default=0.03, ge=0)
    linger_ratio: float = Field(default=0.1, ge=0)
    lease_s: float = Field(default=30.0, gt=0)
    # A batch on the engine longer than this means a wedged device: the worker gives its
    # leases up and exits (code 4) for its supervisor to restart it. Must exceed lease_s.
    max_batch_run_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    reap_interval_s: float = Field(default=2.0, gt=0)
    idle_wait_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=10.0, gt=0)
    # Latency samples kept per metric (a capped list in Redis).
    metric_samples: int = Field(default=2_000, ge=1)
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @model_validator(mode="after")
    def _batch_limit_outlasts_a_lease(self) -> WorkerSettings:
        # Leases are extended so that a batch may outlive one; a limit inside a lease
        # would give up batches the lease alone covers.
        if self.max_batch_run_s <= self.lease_s:
            raise ValueError("max_batch_run_s must be longer than lease_s")
        return self

    @model_validator(mode="after")
    def _idle_wait_inside_the_redis_timeout(self) -> WorkerSettings:
        # The idle wait is a blocking pop: past the socket timeout it would read as an outage.
        if self.idle_wait_s >= self.redis_timeout_s:
            raise ValueError("idle_wait_s must be shorter than redis_timeout_s")
        return self
