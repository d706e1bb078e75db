"""The model side of the worker.

    base.py        the Engine protocol and the accelerator-error classifiers (torch-free)
    paligemma.py   PaliGemma 2 with transformers: loading, batched greedy generation (torch)

Importing this package loads nothing heavy; only `inference.engine.paligemma` imports
torch and transformers.
"""

from inference.engine.base import Engine, is_fatal_device_error, is_out_of_memory

__all__ = ["Engine", "is_fatal_device_error", "is_out_of_memory"]
