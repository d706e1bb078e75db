"""Train the demo checkpoint: `OMP_NUM_THREADS=2 python scripts/train_demo_model.py --out DIR`.

Three steps: the first stage (caption, describe, answer, detect; about 14 minutes on 2
cores), the mask VQ-VAE (`mask_decoder.npz`, in big_vision's vae-oid.npz layout), and the
segment stage on top of the first (together about 6 minutes). `--stage segment` runs only
the last two, starting from the first stage's checkpoint already in DIR. With 2 torch
threads this reproduces the committed `models/palicord-tiny` bit for bit; another thread
count trains a different, similar model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inference.demo.finetune import MASK_DECODER_FILE, finetune
from inference.demo.masks import train_mask_vae
from inference.demo.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("models/palicord-tiny"))
    parser.add_argument("--stage", choices=("all", "segment"), default="all")
    # No defaults here: train()'s own are the recipe, and a second copy would drift.
    parser.add_argument("--steps", type=int, help="first stage; default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="first stage; default: the recipe's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    given = {"steps": args.steps, "batch_size": args.batch_size}
    if args.stage == "all":
        train(args.out, **{key: value for key, value in given.items() if value is not None})
    train_mask_vae(args.out / MASK_DECODER_FILE)
    finetune(args.out)


if __name__ == "__main__":
    main()
