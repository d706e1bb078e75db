"""Queue settings: the Redis URL's secrets never reach a log line."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from inference.queue.settings import QueueSettings, redact_url
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


def test_the_idle_wait_fits_inside_the_redis_timeout() -> None:
    # The idle wait is a blocking pop; a longer one would time out as if Redis were down.
    with pytest.raises(ValidationError, match="IDLE_WAIT_S"):
        WorkerSettings(idle_wait_s=5.0, redis_timeout_s=5.0)
    WorkerSettings(idle_wait_s=1.0, redis_timeout_s=5.0)
