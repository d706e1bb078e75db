"""The shape of the code: what the bot may import, where the Lua lives, what the package
ships, and that the docs name things that exist."""

from __future__ import annotations

import ast
import glob
import importlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The GPU side: the bot process must never load any of these.
FORBIDDEN_FOR_BOT = (
    "torch", "transformers", "inference.engine", "inference.worker", "sandbox", "tests",
)  # fmt: skip
MAX_MODULE_LINES = 400


def _modules(package: str) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_importing_every_bot_module_loads_nothing_of_the_gpu_side() -> None:
    # A fresh interpreter: this test process has imported torch long ago.
    script = (
        "import importlib, json, sys\n"
        f"for name in {_modules('bot')!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_FOR_BOT[:2]!r}"
        f" or m.startswith({FORBIDDEN_FOR_BOT[2:]!r}))\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
    assert len(_modules("bot")) > 10  # the loop above really imported the bot


def test_no_lua_file_sits_at_the_root_of_inference() -> None:
    assert not list((ROOT / "inference").glob("*.lua"))
    assert len(list((ROOT / "inference" / "queue" / "lua").glob("*.lua"))) >= 9


def test_package_data_ships_every_lua_script() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    shipped: set[Path] = set()
    for package, patterns in package_data.items():
        base = ROOT.joinpath(*package.split("."))
        for pattern in patterns:
            matched = {Path(p) for p in glob.glob(str(base / pattern))}
            assert matched, f"package data {package}:{pattern} matches no file"
            shipped |= matched
    lua = set((ROOT / "inference").rglob("*.lua"))
    assert lua and lua <= shipped


def test_modules_stay_concept_sized() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for package in ("bot", "inference", "sandbox")
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


_NAME_IN_TEXT = re.compile(r"`((?:bot|inference)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_docstrings_and_comments_name_things_that_exist() -> None:
    named: dict[str, str] = {}
    for package in ("bot", "inference"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            ast.parse(source)  # only real Python files are scanned
            for match in _NAME_IN_TEXT.finditer(source):
                named.setdefault(match.group(1), str(path.relative_to(ROOT)))
    assert len(named) > 10
    missing = {name: where for name, where in named.items() if not _resolves(name)}
    assert missing == {}
    # Test files named in the docs and the code (tests/ mirrors the tree; files move).
    text_files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for package in ("bot", "inference", "sandbox", "bench", "tests"):
        text_files += (ROOT / package).rglob("*.py")
    test_paths = {
        match: str(path.relative_to(ROOT))
        for path in text_files
        for match in re.findall(r"\btests/[\w/]+\.py\b", path.read_text())
    }
    assert len(test_paths) > 10
    assert {p: where for p, where in test_paths.items() if not (ROOT / p).exists()} == {}
