"""Settings, read once at an entry point from the environment and `.env`, then passed down.

Nothing in Palicord reads `os.environ` elsewhere. Secrets are `SecretStr` so they never
appear in a repr or a log line.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Quantization = Literal["none", "8bit", "4bit"]

MiB = 1024 * 1024


class EngineSettings(BaseSettings):
    """How the worker loads and runs PaliGemma 2."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    model_id: str = "google/paligemma2-3b-mix-448"
    quantization: Quantization = "none"
    device: str | None = None  # default: cuda if available, else cpu
    hf_token: SecretStr | None = None
    # Honour the hub's own switch too, so operators need set only one of them.
    hf_offline: bool = Field(
        default=False, validation_alias=AliasChoices("hf_offline", "hf_hub_offline")
    )
    max_batch_size: int = Field(default=8, ge=1, le=256)
    max_image_bytes: int = Field(default=25 * MiB, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
