"""The model side of the worker.

    base.py        the Engine protocol and the accelerator-error classifiers (torch-free)
    loading.py     a checkpoint onto its device: dtype, quantisation, clear load errors
    inputs.py      model inputs made ahead of the device, joined per chunk, stopped per row
    features.py    the image-feature cache that lets a follow-up skip the vision tower
    paligemma.py   PaliGemma 2 behind Engine: batched greedy generation for mixed tasks

Importing this package loads nothing heavy; only its torch modules (all but `base`) import
torch and transformers.
"""

from inference.engine.base import Engine, is_fatal_device_error, is_out_of_memory

__all__ = ["Engine", "is_fatal_device_error", "is_out_of_memory"]
