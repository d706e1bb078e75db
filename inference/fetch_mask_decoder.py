"""`python -m inference.fetch_mask_decoder [--out PATH]`: download big_vision's segmentation
mask decoder (`vae-oid.npz`, 8.5 MB) from the Hugging Face Space where Google's PaliGemma
demo keeps it, check it, and say how to point the worker at it (MASK_DECODER).

For operators; the worker never downloads it on its own. Fails with one line (exit 1)
when the Hub cannot be reached.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.errors import ModelLoadError

SPACES = ("big-vision/paligemma-hf", "big-vision/paligemma")
FILENAME = "vae-oid.npz"


def download(space: str) -> Path:
    """The file from one Space, through huggingface_hub's cache."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=space, filename=FILENAME, repo_type="space"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.fetch_mask_decoder")
    parser.add_argument("--out", type=Path, default=Path(FILENAME), help="where to save it")
    args = parser.parse_args(argv)
    problems = []
    for space in SPACES:
        try:
            cached = download(space)
        except Exception as exc:  # offline, no such file, rate limits: try the next Space
            problems.append(f"{space}: {type(exc).__name__}")
            continue
        from inference.engine.masks import check_arrays, load_arrays

        try:
            check_arrays(load_arrays(cached), str(cached))
        except ModelLoadError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached, args.out)
        print(f"saved {args.out}; set MASK_DECODER={args.out.resolve()} for the worker")
        return 0
    print(
        f"error: could not download {FILENAME} from the Hugging Face Hub "
        f"({'; '.join(problems)}); on a machine that can reach it, run this there and copy "
        "the file over, or get gs://big_vision/paligemma/vae-oid.npz",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
