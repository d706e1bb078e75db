"""Train the demo checkpoint: `OMP_NUM_THREADS=2 python scripts/train_demo_model.py --out DIR`.

With 2 torch threads this reproduces the committed `models/palicord-tiny` bit for bit (in
about 14 minutes on 2 cores); another thread count trains a different, similar model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inference.demo.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/palicord-tiny"))
    # No defaults here: train()'s own are the recipe, and a second copy would drift.
    parser.add_argument("--steps", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {"steps": args.steps, "batch_size": args.batch_size}
    train(args.out, **{key: value for key, value in given.items() if value is not None})


if __name__ == "__main__":
    main()
