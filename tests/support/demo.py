"""Shared access to the committed demo checkpoint for tests (loaded once per process)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

from inference.engine.paligemma import PaliGemmaEngine
from inference.settings import EngineSettings
from tests.support.queue import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = ROOT / "models" / "palicord-tiny"


def demo_worker_env(prefix: str, **env: str) -> dict[str, str]:
    """The environment of a `python -m inference.worker` process on the demo checkpoint,
    serving `prefix` (benchmarks and tests start several): no linger, two threads, no
    metrics port to share; `env` adds or overrides settings."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": REDIS_URL,
        "KEY_PREFIX": prefix,
        "MODEL_ID": str(DEMO_MODEL),
        "LINGER_S": "0",
        "OMP_NUM_THREADS": "2",
        "METRICS_PORT": "0",
        **env,
    }


def demo_settings(**overrides: object) -> EngineSettings:
    """Engine settings pointing at the demo checkpoint, independent of any .env file."""
    # CI runs on the CPU; PALICORD_TEST_DEVICE=cuda re-runs the same checks on a GPU (bf16).
    device = os.environ.get("PALICORD_TEST_DEVICE", "cpu")
    # In-process engines prepare in the calling thread: spawning preparing processes for
    # each would cost the suite seconds. The processes are covered by test_engine_encoding
    # and by every `python -m inference.worker` the tests start (the default, 2).
    base = EngineSettings(
        _env_file=None, model_id=str(DEMO_MODEL), device=device, prepare_processes=0
    )
    return base.model_copy(update=overrides)


@functools.cache
def demo_engine(batch_size: int = 8) -> PaliGemmaEngine:
    """The demo model behind the real engine, shared by the tests of one process."""
    return PaliGemmaEngine.from_settings(demo_settings(batch_size=batch_size))


def count_generate(monkeypatch: pytest.MonkeyPatch, engine: PaliGemmaEngine) -> list[int]:
    """The rows of each call to the engine's model.generate from now on (the model itself
    is wrapped, so the engine's own bookkeeping is not what is counted)."""
    model = engine._loaded.model
    real = model.generate
    rows: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        rows.append(int(kwargs["input_ids"].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counted)
    return rows
