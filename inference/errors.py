"""Palicord's exceptions; each message is fit to show a Discord user as it is.

    PalicordError
    ├── ImageError                  the picture itself was refused
    │   ├── EmptyImage
    │   ├── NotAnImage
    │   ├── UnsupportedImageFormat
    │   ├── CorruptImage
    │   ├── ImageTooLarge           too many bytes
    │   ├── ImageTooManyPixels      decompression-bomb guard
    │   ├── ImageTooComplex         too many scans, frames or chunks (before decoding)
    │   └── ImageTooSlow            over the worker's decode budget
    ├── RequestError                the task's parameters are wrong
    │   ├── UnknownTask
    │   ├── UnsupportedLanguage
    │   └── InvalidParameter
    ├── ModelError                  the model could not be loaded or run
    │   ├── ModelLoadError
    │   ├── QuantizationUnavailable
    │   └── GenerationError
    ├── QueueError                  the job queue refused or lost the request
    │   ├── QueueFull
    │   ├── GuildOverCap
    │   ├── UserOverCap
    │   ├── NoWorkerAlive
    │   ├── QueueUnavailable
    │   │   └── QueueBusy           over MAX_QUEUED_BYTES, or Redis at its maxmemory
    │   ├── JobTimedOut
    │   ├── JobFailed
    │   └── MalformedMessage
    └── ConfigurationError          a setting is wrong (for the operator, at start-up)

`code` is a stable, machine-readable name that crosses the queue, so the bot can map a
worker-side failure back to the same class without matching strings.
"""

from __future__ import annotations

from typing import ClassVar


class PalicordError(Exception):
    """Base class; `str(err)` is the user-facing message."""

    code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "Something went wrong on our side. Please try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0])


# --- images -----------------------------------------------------------------------------


class ImageError(PalicordError):
    code = "image"
    default_message = "That image could not be used."


class EmptyImage(ImageError):
    code = "image_empty"
    default_message = "That file is empty."


class NotAnImage(ImageError):
    code = "image_not_image"
    default_message = "That file is not an image I can read (PNG, JPEG, GIF, WebP or BMP)."


class UnsupportedImageFormat(ImageError):
    code = "image_format"
    default_message = "That image format is not supported. Please send PNG, JPEG, GIF, WebP or BMP."


class CorruptImage(ImageError):
    code = "image_corrupt"
    default_message = "That image is damaged or incomplete and could not be decoded."


class ImageTooLarge(ImageError):
    code = "image_too_large"
    default_message = "That file is too large."


class ImageTooManyPixels(ImageError):
    code = "image_too_many_pixels"
    default_message = "That image has too many pixels."


class ImageTooComplex(ImageError):
    code = "image_too_complex"
    default_message = (
        "That picture is built in a way that would take too long to read. "
        "Save it again as an ordinary PNG or JPEG and try again."
    )


class ImageTooSlow(ImageError):
    code = "image_too_slow"
    default_message = (
        "This picture takes too long to read. "
        "Save it again as an ordinary PNG or JPEG and try again."
    )


# --- requests ---------------------------------------------------------------------------


class PictureExpired(ImageError):
    code = "picture_expired"
    default_message = (
        "I no longer have that picture (I keep pictures for a while only). Please upload it again."
    )


class RequestError(PalicordError):
    code = "request"
    default_message = "That request is not valid."


class UnknownTask(RequestError):
    code = "unknown_task"
    default_message = "I don't know that task."


class UnsupportedLanguage(RequestError):
    code = "unsupported_language"
    default_message = "That language is not supported."


class InvalidParameter(RequestError):
    code = "invalid_parameter"
    default_message = "A parameter of that request is not valid."


# --- model ------------------------------------------------------------------------------


class ModelError(PalicordError):
    code = "model"
    default_message = "The vision model failed on this request."


class ModelLoadError(ModelError):
    code = "model_load"
    default_message = "The vision model could not be loaded."


class QuantizationUnavailable(ModelError):
    code = "quantization_unavailable"
    default_message = "8-bit and 4-bit quantisation need a CUDA GPU and bitsandbytes."


class GenerationError(ModelError):
    code = "generation"
    default_message = "The vision model failed while answering."


# --- queue ------------------------------------------------------------------------------


class QueueError(PalicordError):
    code = "queue"
    default_message = "The job queue is not working right now."


class QueueFull(QueueError):
    code = "queue_full"
    default_message = "I'm very busy right now. Please try again in a few minutes."


class GuildOverCap(QueueError):
    code = "guild_over_cap"
    default_message = "This server already has many requests waiting. Please try again soon."


class UserOverCap(QueueError):
    code = "user_over_cap"
    default_message = "You already have requests waiting. Please wait for them to finish."


class NoWorkerAlive(QueueError):
    code = "no_worker"
    default_message = "No vision worker is online right now. Please try again later."


class QueueUnavailable(QueueError):
    code = "queue_unavailable"
    default_message = "I can't reach my job queue right now. Please try again shortly."


class QueueBusy(QueueUnavailable):
    """The queue holds as many pictures as it may (MAX_QUEUED_BYTES), or Redis refuses new
    writes for memory (`maxmemory` with `noeviction`): it frees up as jobs finish."""

    code = "queue_busy"
    default_message = "I'm busy right now. Please try again in a moment."


class JobTimedOut(QueueError):
    code = "timed_out"
    default_message = "Your request waited too long in line and was dropped. Please try again."


class JobFailed(QueueError):
    code = "job_failed"
    default_message = "Your request failed after several attempts. Please try again later."


class MalformedMessage(QueueError):
    code = "malformed"
    default_message = "A queue message could not be read."


# --- configuration ----------------------------------------------------------------------


class ConfigurationError(PalicordError):
    """Raised by `inference.queue.settings.load_settings`; the message names each wrong
    setting and what is wrong with it, and never quotes a value (secrets included)."""

    code = "configuration"
    default_message = "A setting is wrong."


def error_types(root: type[PalicordError] = PalicordError) -> list[type[PalicordError]]:
    """`root` and every error class below it (the bot's own included, once imported)."""
    out: list[type[PalicordError]] = [root]
    for sub in root.__subclasses__():
        out.extend(error_types(sub))
    return out


def error_from_code(code: str, message: str | None = None) -> PalicordError:
    """Rebuild the error class named by `code` (unknown codes become PalicordError)."""
    for cls in error_types():
        if cls.code == code:
            return cls(message)
    return PalicordError(message)
