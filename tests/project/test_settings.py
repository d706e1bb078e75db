"""One settings object per program, each limit defined once: no environment variable
means two settings, and no settings object builds another one from the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from bot.settings import BotSettings
from inference.intake import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from inference.queue.settings import ImageLimits, QueueSettings
from inference.settings import EngineSettings, WorkerSettings

SETTINGS: tuple[type[BaseSettings], ...] = (
    ImageLimits,
    QueueSettings,
    EngineSettings,
    WorkerSettings,
    BotSettings,
)


def env_names(name: str, field: FieldInfo) -> set[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = {c for c in alias.choices if isinstance(c, str)}
    elif isinstance(alias, str):
        names = {alias}
    else:
        names = {field.alias or name}
    return {n.upper() for n in names}


def test_no_environment_variable_maps_to_two_settings_with_different_defaults() -> None:
    defaults: dict[str, dict[str, list[str]]] = {}
    for cls in SETTINGS:
        for name, field in cls.model_fields.items():
            default = repr(field.get_default(call_default_factory=True))
            for env in env_names(name, field):
                defaults.setdefault(env, {}).setdefault(default, []).append(
                    f"{cls.__name__}.{name}"
                )
    assert "MAX_IMAGE_BYTES" in defaults and "HF_HUB_OFFLINE" in defaults  # aliases read too
    conflicts = {env: found for env, found in defaults.items() if len(found) > 1}
    assert conflicts == {}


def test_each_setting_is_declared_by_one_class_only() -> None:
    declared: dict[str, list[str]] = {}
    for cls in SETTINGS:
        for name in cls.__annotations__:
            if name in cls.model_fields:
                declared.setdefault(name, []).append(cls.__name__)
    assert {n: where for n, where in declared.items() if len(where) > 1} == {}


def test_no_settings_object_builds_another_from_the_environment() -> None:
    for cls in SETTINGS:
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            assert not isinstance(default, BaseSettings), f"{cls.__name__}.{name}"


def test_one_batch_size_for_the_worker_and_its_engine() -> None:
    assert [n for n in WorkerSettings.model_fields if "batch_size" in n] == ["batch_size"]


def test_both_programs_apply_the_same_image_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (BotSettings.model_fields["max_image_bytes"].default, MAX_IMAGE_BYTES) == (
        WorkerSettings.model_fields["max_image_bytes"].default,
        20 * 1024 * 1024,
    )
    assert WorkerSettings.model_fields["max_image_pixels"].default == MAX_IMAGE_PIXELS
    monkeypatch.setenv("MAX_IMAGE_BYTES", "12345")
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "6789")
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    worker, bot = WorkerSettings(), BotSettings()
    assert (worker.max_image_bytes, worker.max_image_pixels) == (12345, 6789)
    assert (bot.max_image_bytes, bot.max_image_pixels) == (12345, 6789)


def test_worker_settings_carry_the_engines_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_ID", "models/palicord-tiny")
    monkeypatch.setenv("BATCH_SIZE", "3")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = WorkerSettings()
    assert (settings.model_id, settings.batch_size, settings.hf_offline) == (
        "models/palicord-tiny",
        3,
        True,
    )
    # Explicit values win over the environment, in the one object the engine reads.
    assert WorkerSettings(model_id="other", batch_size=5).model_id == "other"


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, re.M))
    every = {
        next(iter(sorted(env_names(name, field))))
        for cls in SETTINGS
        for name, field in cls.model_fields.items()
    }
    assert every - listed == set()


def test_image_link_hosts_and_the_discord_cdn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    defaults = BotSettings()
    assert "i.imgur.com" in defaults.image_link_hosts
    assert "cdn.discordapp.com" in defaults.image_link_hosts
    assert defaults.discord_cdn_url == "https://cdn.discordapp.com"
    monkeypatch.setenv("IMAGE_LINK_HOSTS", " I.Example.org , cdn.example.net ")
    monkeypatch.setenv("ATTACHMENT_HTTP_HOSTS", "127.0.0.1")
    monkeypatch.setenv("DISCORD_CDN_URL", "http://127.0.0.1:8080/cdn/")
    custom = BotSettings()
    assert custom.image_link_hosts == ("i.example.org", "cdn.example.net")
    assert custom.discord_cdn_url == "http://127.0.0.1:8080/cdn"
    # Stickers and emoji must come from an attachment host, like everything Discord serves.
    for off_list in ("https://cdn.example.net", "http://cdn.discordapp.com", "https://127.0.0.1"):
        monkeypatch.setenv("DISCORD_CDN_URL", off_list)
        with pytest.raises(ValueError, match="DISCORD_CDN_URL"):
            BotSettings()
