"""Settings of the job queue, shared by both programs, and the image limits they both apply.

Each program builds exactly one settings object at its entry point (`BotSettings` in
`python -m bot`, `WorkerSettings` in `python -m inference.worker`, `EngineSettings` in the
offline CLI) from the environment and `.env`; all of them extend the classes here, so a
variable such as MAX_IMAGE_BYTES means one setting with one default everywhere.
`REDIS_URL` may hold a password, so it is a SecretStr and only `redacted_url()` is logged.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.intake import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from inference.queue.keys import DEFAULT_PREFIX

_QUERY_PASSWORD_RE = re.compile(r"(?i)((?:^|&)password=)[^&]*")
# Redis Cluster hashes only the part between the first "{" and the next "}" (if not empty).
_HASH_TAG_RE = re.compile(r"^[^{]*\{[^}]+\}")


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

    @model_validator(mode="after")
    def _one_slot_on_a_cluster(self) -> QueueSettings:
        if self.redis_cluster and not _HASH_TAG_RE.search(self.key_prefix):
            raise ValueError(
                "on a Redis Cluster KEY_PREFIX must hold a hash tag such as {palicord}, "
                "so that all of the queue's keys land in one slot"
            )
        return self

    @model_validator(mode="after")
    def _image_outlives_its_job(self) -> QueueSettings:
        # A job may start up to its deadline; an image gone by then fails the job.
        if self.image_ttl_s <= self.job_deadline_s:
            raise ValueError("image_ttl_s must be longer than job_deadline_s")
        return self

    def redacted_url(self) -> str:
        """The Redis URL with its password hidden."""
        return redact_url(self.redis_url.get_secret_value())
