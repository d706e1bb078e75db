"""`python -m inference.fetch_mask_decoder`: one clear line offline; a checked copy online
(the Hub itself cannot be reached from the test machines: its download is the one stand-in)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference import fetch_mask_decoder
from tests.engine.test_masks import random_state

pytestmark = pytest.mark.slow  # torch, the demo model, whole processes or a browser


def test_offline_it_fails_in_one_line() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "inference.fetch_mask_decoder", "--out", os.devnull],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: could not download")
    assert "gs://big_vision/paligemma/vae-oid.npz" in done.stderr


def test_a_download_is_checked_and_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cached = tmp_path / "cache.npz"
    np.savez(cached, **random_state(0))  # type: ignore[arg-type]
    monkeypatch.setattr(fetch_mask_decoder, "download", lambda space: cached)
    out = tmp_path / "models" / "vae-oid.npz"
    assert fetch_mask_decoder.main(["--out", str(out)]) == 0
    assert out.read_bytes() == cached.read_bytes()
    assert f"MASK_DECODER={out.resolve()}" in capsys.readouterr().out

    broken = random_state(0)
    del broken["decoder.0.bias"]
    np.savez(cached, **broken)  # type: ignore[arg-type]
    assert fetch_mask_decoder.main(["--out", str(tmp_path / "x.npz")]) == 1
    assert "decoder.0.bias" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
