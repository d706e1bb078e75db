"""Classifying accelerator failures without importing torch (the worker loop and the
engine share one definition of "recoverable" and "fatal")."""

from __future__ import annotations


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's (CUDA) OutOfMemoryError, by class name so torch stays unimported."""
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)


def is_fatal_device_error(exc: BaseException) -> bool:
    """True for CUDA errors that leave the device unusable (not out-of-memory)."""
    if is_out_of_memory(exc):
        return False
    module = type(exc).__module__ or ""
    # torch raises RuntimeError("CUDA error: ...") or, since 2.8, torch.AcceleratorError.
    return (
        "CUDA error" in str(exc)
        or module.startswith("torch.cuda")
        or type(exc).__name__ == "AcceleratorError"
    )
