"""Queue settings: the Redis URL's secrets never reach a log line, and a wrong setting is
named without its value."""

from __future__ import annotations

import logging
import re

import pytest
from pydantic import ValidationError

from inference.errors import ConfigurationError
from inference.queue.settings import QueueSettings, load_settings, redact_url
from inference.settings import WorkerSettings


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://bot:s3cret@[::1]:6380/1", "rediss://bot:***@[::1]:6380/1"),
        ("redis://cache/0?db=1&password=s3cret", "redis://cache/0?db=1&password=***"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_never_show_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://bot:s3cret@cache:6380/0")
    settings = WorkerSettings()
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("%s %r %s", settings, settings, settings.redacted_url())
    assert "s3cret" not in caplog.text
    assert settings.redis_url.get_secret_value().endswith("@cache:6380/0")


def test_an_image_must_outlive_its_jobs_deadline() -> None:
    with pytest.raises(ValidationError, match="IMAGE_TTL_S"):
        QueueSettings(job_deadline_s=3600, image_ttl_s=1800)
    QueueSettings(job_deadline_s=600, image_ttl_s=1800)


def test_the_largest_picture_fits_the_picture_store() -> None:
    # Every queued picture is kept there (pinned); one larger than the store could
    # never be queued.
    with pytest.raises(ValidationError, match="PICTURE_STORE_MAX_BYTES"):
        QueueSettings(picture_store_max_bytes=2**20, max_image_bytes=2**21)
    QueueSettings(picture_store_max_bytes=2**21, max_image_bytes=2**21)


def test_the_idle_wait_fits_inside_the_redis_timeout() -> None:
    # The idle wait is a blocking pop; a longer one would time out as if Redis were down.
    with pytest.raises(ValidationError, match="IDLE_WAIT_S"):
        WorkerSettings(idle_wait_s=5.0, redis_timeout_s=5.0)
    WorkerSettings(idle_wait_s=1.0, redis_timeout_s=5.0)


@pytest.mark.parametrize(
    ("url", "cluster", "problem"),
    [
        ("redis://:pw@node:7000/0", True, None),
        ("redis://:pw@node:7000", True, None),
        ("redis://:pw@node:7000/3", True, "database other than 0"),
        ("redis://:pw@node:7000/0?db=2", True, "database other than 0"),
        ("unix:///run/redis.sock", True, "unix://"),
        ("redis:///0", True, "host"),
        ("redis://:pw@cache:6379/3", False, None),
        ("unix:///run/redis.sock?db=1", False, None),
        ("http://cache:6379/0", False, "must start with"),
        ("redis://:pw/Xy9@cache:6379/0", False, "percent-encoded"),
        ("redis://cache:6379/zero", False, "must be a number"),
        ("redis://cache:6379/0?db=one", False, "must be a number"),
    ],
)
def test_a_redis_url_redis_py_would_refuse_is_refused_by_the_settings(
    url: str, cluster: bool, problem: str | None
) -> None:
    """Fails on the old code, which left these to redis-py's first connection."""
    build = lambda: load_settings(  # noqa: E731
        QueueSettings, _env_file=None, redis_url=url, redis_cluster=cluster, key_prefix="{p}:"
    )
    if problem is None:
        assert build().redis_url.get_secret_value() == url
        return
    with pytest.raises(ConfigurationError, match=re.escape(problem)) as caught:
        build()
    assert "REDIS_URL" in str(caught.value)
    assert all(part not in str(caught.value) for part in ("pw", "Xy9", "7000", "6379"))


def test_a_configuration_error_carries_no_pydantic_error_and_no_value() -> None:
    """Fails on the old code (no load_settings: pydantic's message quoted the inputs)."""
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            WorkerSettings,
            _env_file=None,
            hf_token="hf_0123456789abcdef",
            hf_offline="perhaps",
            image_ttl_s=60,
        )
    message = str(caught.value)
    assert message == (
        "HF_OFFLINE/HF_HUB_OFFLINE: Input should be a valid boolean, unable to interpret input"
    )
    # Nothing to print by accident: the ValidationError is neither cause nor context.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(ConfigurationError, match=r"^IMAGE_TTL_S must be longer than JOB_DEAD"):
        load_settings(WorkerSettings, _env_file=None, hf_token="hf_0123456789", image_ttl_s=60)
