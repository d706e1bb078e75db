"""`python -m inference ...` as an operator runs it: a real subprocess, the demo model."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.demo.shapes import Shape, draw_shape, make_scene
from tests.support.demo import DEMO_MODEL, ROOT
from tests.support.masks import rle_decode

pytestmark = pytest.mark.slow  # the demo model, torch or whole processes

SAMPLE = ROOT / "samples" / "shapes.png"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_detect_prints_json_and_writes_the_annotated_image(tmp_path: Path) -> None:
    out = tmp_path / "annotated.png"
    proc = run_cli(
        "detect",
        str(SAMPLE),
        "--objects",
        "circle",
        "--model",
        str(DEMO_MODEL),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["task"] == "detect"
    assert set(result) == {"task", "text", "detections"}
    labels = {d["label"] for d in result["detections"]}
    assert labels == {"circle"}
    width, height = Image.open(SAMPLE).size
    for det in result["detections"]:
        x0, y0, x1, y1 = det["box"]
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
    with Image.open(out) as annotated:
        assert annotated.size == (width, height)


def test_answer_prints_only_text(tmp_path: Path) -> None:
    proc = run_cli("answer", str(SAMPLE), "-q", "how many shapes are there?", "-m", str(DEMO_MODEL))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"task": "answer", "text": "three"}


def test_a_text_file_named_png_is_refused_before_loading_the_model(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("shopping list: eggs, milk")
    proc = run_cli("caption", str(fake), "--model", "/nonexistent/model")
    assert_one_line_error(proc, "not an image")


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("answer", str(SAMPLE)), "question")
    assert_one_line_error(run_cli("caption", str(tmp_path / "missing.png")), "Cannot read")
    assert_one_line_error(run_cli("caption", str(SAMPLE), "--lang", "xx"), "not supported")


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("caption", str(SAMPLE), "--model", str(tmp_path / "no-model"))
    assert_one_line_error(proc, "Could not load model")


def test_a_question_spelling_the_image_token_is_answered() -> None:
    """Fails on the old code: the question's `<image>` became an image token and the
    model raised ("Image features and image tokens do not match")."""
    proc = run_cli(
        "answer", str(SAMPLE), "-q", "what is <image> <bos> here?", "-m", str(DEMO_MODEL)
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["text"]


def _one_shape_picture(tmp_path: Path) -> tuple[Path, Shape, np.ndarray]:
    scene = make_scene(random.Random(31), size=(260, 190), min_shapes=1, max_shapes=1)
    [shape] = scene.shapes
    path = tmp_path / "one.png"
    scene.image.save(path)
    truth = Image.new("L", scene.image.size, 0)
    draw_shape(ImageDraw.Draw(truth), shape, fill=255)
    return path, shape, np.asarray(truth) > 0


def test_segment_prints_rle_masks_and_writes_the_overlay(tmp_path: Path) -> None:
    picture, shape, truth = _one_shape_picture(tmp_path)
    out = tmp_path / "overlay.png"
    proc = run_cli(
        "segment",
        str(picture),
        "--objects",
        shape.kind,
        "--model",
        str(DEMO_MODEL),
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {"task", "text", "segments"} and result["task"] == "segment"
    [segment] = result["segments"]
    assert segment["label"] == shape.kind and len(segment["box"]) == 4
    rle = segment["mask"]
    height, width = truth.shape
    assert rle["size"] == [height, width] and sum(rle["counts"]) == width * height
    mask = rle_decode(rle)
    assert (mask & truth).sum() / (mask | truth).sum() >= 0.6
    with Image.open(out) as overlay:
        assert overlay.size == (width, height)
        x0, y0, x1, y1 = shape.box
        centre = overlay.convert("RGB").getpixel(((x0 + x1) // 2, (y0 + 2 * y1) // 3))
    assert centre != Image.open(picture).convert("RGB").getpixel(
        ((x0 + x1) // 2, (y0 + 2 * y1) // 3)
    )


def test_segment_without_a_decoder_gives_boxes_and_says_why(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, model, ignore=shutil.ignore_patterns("mask_decoder.npz"))
    picture, shape, _ = _one_shape_picture(tmp_path)
    proc = run_cli("segment", str(picture), "--objects", shape.kind, "--model", str(model))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [s["mask"] for s in result["segments"]] == [None]
    assert "python -m inference.fetch_mask_decoder" in result["note"]


def test_a_broken_mask_decoder_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "vae-oid.npz"
    np.savez(broken, decoder_0=np.zeros(3))
    proc = run_cli(
        "segment",
        str(SAMPLE),
        "--objects",
        "circle",
        "--model",
        str(DEMO_MODEL),
        "--mask-decoder",
        str(broken),
    )
    assert_one_line_error(proc, "_vq_vae._embedding")
