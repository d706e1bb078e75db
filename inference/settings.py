"""Settings of the GPU side: the model (`EngineSettings`, all the offline CLI needs) and
the worker service (`WorkerSettings`: the queue's settings, the model's, and its own).

`python -m inference.worker` builds one `WorkerSettings` at start-up and passes it down;
the engine reads its fields from that same object, so nothing here builds a second
settings object from the environment. Secrets are SecretStr: they never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from inference.queue.keys import is_key_part
from inference.queue.settings import ImageLimits, QueueSettings

Quantization = Literal["none", "8bit", "4bit"]
GenerationLoop = Literal["transformers", "static"]


class EngineSettings(ImageLimits):
    """How PaliGemma 2 is loaded and run."""

    model_id: str = "google/paligemma2-3b-mix-448"
    quantization: Quantization = "none"
    # Who runs the decode loop: transformers' `generate`, or Palicord's fixed-shape loop
    # (inference.engine.static_loop: the same tokens, CUDA graphs on a GPU). `generate`
    # stays the default until a GPU run has shown the static loop's speed-up there.
    generation_loop: GenerationLoop = "transformers"
    device: str | None = None  # default: cuda if available, else cpu
    hf_token: SecretStr | None = None
    # Honour the hub's own switch too, so operators need set only one of them.
    hf_offline: bool = Field(
        default=False, validation_alias=AliasChoices("hf_offline", "hf_hub_offline")
    )
    # Jobs a worker takes at once, which is also the engine's largest generate() call.
    batch_size: int = Field(default=8, ge=1, le=256)
    # Image features of recent pictures, kept on the device so that a follow-up on the
    # same picture skips the vision tower (inference.engine.features); 0 turns it off.
    # A 3B-448 picture takes 4.5 MiB in bf16 (224 px: 1.1 MiB), so the default holds ~56.
    feature_cache_max_bytes: int = Field(default=256 * 2**20, ge=0)
    # Processes that decode and tokenise the next batch's pictures (inference.engine.
    # encoding): in processes of their own they do not take the GIL from generation, as
    # a thread does. 0: in a thread of the worker. A 24-megapixel JPEG takes 31-149 ms to
    # decode and reduce (bench/intake.py); raise it for big batches of big photos.
    prepare_processes: int = Field(default=2, ge=0, le=64)
    # Wall-clock budget for preparing one picture in a preparing process (decode, reduce,
    # resize, tokenise); a picture over it is refused and its process replaced. 0: none.
    # Ordinary pictures take 0.03-1.2 s at the 40-megapixel cap on a busy 2-core machine
    # (docs/operations.md); hostile ones are meant to take minutes. A thread cannot be
    # stopped, so with PREPARE_PROCESSES=0 (and in the offline CLI) only the structural
    # caps of inference.structure apply.
    decode_timeout_s: float = Field(default=5.0, ge=0)
    # Threads torch uses on the CPU for the engine (not for CUDA). Default: one fewer than
    # the cores, so the worker's own CPU side (Redis, the preparing processes) keeps a core:
    # an OpenMP team spread over every core stalls whenever anything else runs (measured
    # with the demo model on 2 cores: the pipelined worker at 0.3 of raw with 2 threads,
    # 0.8-0.9 with 1).
    torch_threads: int | None = Field(default=None, ge=1, le=1024)
    # big_vision's vae-oid.npz, which turns `segment` codes into masks (python -m
    # inference.fetch_mask_decoder). Default: mask_decoder.npz in a local model's folder
    # when there is one; without a decoder, segment answers have boxes only.
    mask_decoder: Path | None = None


class WorkerSettings(QueueSettings, EngineSettings):
    """Everything `python -m inference.worker` needs."""

    worker_id: str | None = None  # default: <hostname>-<pid>-<random>
    # Upper bound on waiting to fill a partial batch; the wait actually used is at most
    # `linger_ratio` of a recent batch's run time, so a fast engine never waits.
    linger_s: float = Field(default=0.03, ge=0)
    linger_ratio: float = Field(default=0.1, ge=0)
    # Take and prepare the next batch while one generates, so the device never waits for
    # Redis or the CPU. Off: one batch at a time (a job then waits in the shared queue,
    # where an idle worker elsewhere could take it, rather than in this worker's hands).
    pipeline: bool = True
    lease_s: float = Field(default=30.0, gt=0)
    # A batch on the engine longer than this means a wedged device: the worker gives its
    # leases up and exits (code 4) for its supervisor to restart it. Must exceed lease_s.
    max_batch_run_s: float = Field(default=600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    reap_interval_s: float = Field(default=1.0, gt=0)
    idle_wait_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=10.0, gt=0)

    @field_validator("worker_id")
    @classmethod
    def _worker_id_fits_in_a_key(cls, value: str | None) -> str | None:
        # It names the worker's heartbeat key and its leases: letters, digits, - _ . only.
        if value and not is_key_part(value):
            raise ValueError("may hold only letters, digits, - _ and . (at most 100)")
        return value or None

    @model_validator(mode="after")
    def _batch_limit_outlasts_a_lease(self) -> WorkerSettings:
        # Leases are extended so that a batch may outlive one; a limit inside a lease
        # would give up batches the lease alone covers.
        if self.max_batch_run_s <= self.lease_s:
            raise ValueError("MAX_BATCH_RUN_S must be longer than LEASE_S")
        return self

    @model_validator(mode="after")
    def _idle_wait_inside_the_redis_timeout(self) -> WorkerSettings:
        # The idle wait is a blocking pop: past the socket timeout it would read as an outage.
        if self.idle_wait_s >= self.redis_timeout_s:
            raise ValueError("IDLE_WAIT_S must be shorter than REDIS_TIMEOUT_S")
        return self
