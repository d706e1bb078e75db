"""What Palicord remembers about pictures, shared by every bot process and worker.

- **Pictures**, by content hash: the bot keeps each picture it queued, so a follow-up (a
  button on the answer, a reply to it) runs on the same image without downloading it
  again. Its id travels in the buttons' `custom_id`; Redis is all a button needs, so the
  buttons of an answer keep working after the bot restarts.
- **Answers**, by picture, task (with its question, objects and language) and model: the
  worker keeps what it computed, and the bot answers an identical request from it without
  queueing. The model is part of the key, so a cached answer is only used while a worker
  with that model is online, and a change of checkpoint never serves stale answers.

Both are bounded twice: a TTL (PICTURE_TTL_S, RESULT_CACHE_TTL_S) and a byte budget
(PICTURE_STORE_MAX_BYTES, RESULT_CACHE_MAX_BYTES) kept by `lua/stash.lua`, oldest first;
the queue forbids Redis's own eviction (noeviction), so nothing here relies on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence

from redis.asyncio import Redis

from inference.errors import MalformedMessage
from inference.queue.connection import awaited, redis_boundary
from inference.queue.keys import Keys, fairness_unit
from inference.queue.messages import JobResult
from inference.queue.scripts import Scripts
from inference.queue.settings import QueueSettings
from inference.tasks import NOTE_FIELD, TaskSpec

PICTURE, RESULT = "picture", "result"
# 128 bits of SHA-256: ample against collisions, and short enough for a button's custom_id.
DIGEST_HEX = 32
DIGEST_RE = re.compile(rf"^[0-9a-f]{{{DIGEST_HEX}}}$")
# In a job's (echoed) context: the digest of its picture, and whether the answer came
# from the cache.
PICTURE_FIELD = "pic"
FROM_CACHE = "cache"
# FROM_CACHE's values: asked before in the same server (or by the same person in DMs),
# so when is theirs to know; or elsewhere, which an age would give away.
SAME_ORIGIN, ELSEWHERE = "1", "elsewhere"
# In a kept answer's context: a hash of where it was asked (guild, or the person in DMs).
ORIGIN = "origin"


def origin_of(guild_id: str, user_id: str) -> str:
    """Who may learn when an answer was first asked: its guild's members, in DMs the
    person; hashed, so the cache holds no guild or user id."""
    unit = fairness_unit(guild_id, user_id)
    return hashlib.sha256(f"origin:{unit}".encode()).hexdigest()[:16]


def picture_digest(data: bytes) -> str:
    """The id of a picture: a hash of its bytes (the same file is the same picture)."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX]


def answer_key(digest: str, spec: TaskSpec, model_id: str) -> str:
    """Everything that changes the answer: the picture, the task with its question,
    objects, language and length, and the model."""
    fields = [spec.task.value, spec.language, spec.question, list(spec.objects)]
    material = json.dumps([digest, *fields, spec.max_new_tokens, model_id])
    return hashlib.sha256(material.encode()).hexdigest()[:DIGEST_HEX]


class Memory:
    """Pictures and answers, each kind within its own budget (see the module doc)."""

    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts, settings: QueueSettings):
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._settings = settings

    @property
    def caching(self) -> bool:
        return self._settings.result_cache_ttl_s > 0

    # --- pictures ----------------------------------------------------------------------

    async def keep_picture(self, data: bytes) -> str:
        """Keep `data` for follow-ups; returns its digest."""
        digest = picture_digest(data)
        s = self._settings
        await self._scripts.stash(
            PICTURE, digest, data, ttl_s=s.picture_ttl_s, max_bytes=s.picture_store_max_bytes
        )
        return digest

    async def has_picture(self, digest: str) -> bool:
        if not DIGEST_RE.match(digest):
            return False
        with redis_boundary():
            return bool(await awaited(self._redis.exists(self._keys.stash(PICTURE, digest))))

    async def picture(self, digest: str) -> bytes | None:
        """The picture, or None once it expired or was dropped for space."""
        if not DIGEST_RE.match(digest):
            return None
        with redis_boundary():
            data = await awaited(self._redis.get(self._keys.stash(PICTURE, digest)))
        return data if isinstance(data, bytes) else None

    # --- answers -----------------------------------------------------------------------

    async def keep_answer(
        self, digest: str, spec: TaskSpec, model_id: str, result: JobResult, *, origin: str = ""
    ) -> None:
        """Keep a successful answer (without its reply context, which is per request; with
        the `origin_of` its request)."""
        if not self.caching or not result.ok:
            return
        context = {ORIGIN: origin} if origin else {}
        bare = dataclasses.replace(result, job_id="cached", context=context, worker_id=None)
        s = self._settings
        await self._scripts.stash(
            RESULT,
            answer_key(digest, spec, model_id),
            bare.to_json(),
            ttl_s=s.result_cache_ttl_s,
            max_bytes=s.result_cache_max_bytes,
        )

    async def cached_answer(
        self, digest: str, spec: TaskSpec, model_ids: Iterable[str]
    ) -> JobResult | None:
        """An answer one of `model_ids` gave to this exact request, if one is kept."""
        if not self.caching:
            return None
        keys = [self._keys.stash(RESULT, answer_key(digest, spec, m)) for m in sorted(model_ids)]
        if not keys:
            return None
        with redis_boundary():
            found: Sequence[bytes | None] = await awaited(self._redis.mget(keys))
        for raw in found:
            if raw is None:
                continue
            try:
                return JobResult.from_json(raw)
            except MalformedMessage:
                continue  # written by another version: recomputed, not trusted
        return None


def from_cache(
    cached: JobResult, *, job_id: str, context: dict[str, str], origin: str = ""
) -> JobResult:
    """A kept answer as the result of one request's image, marked as coming from the cache:
    SAME_ORIGIN when it was first asked where this request comes from (`origin`), so its
    age may be shown (`finished_at` still says when it was computed), else ELSEWHERE."""
    same = bool(origin) and cached.context.get(ORIGIN) == origin
    return dataclasses.replace(
        cached,
        job_id=job_id,
        # The worker's note (why there are no masks, say) belongs to the answer: kept.
        context={**context, **_note(cached), FROM_CACHE: SAME_ORIGIN if same else ELSEWHERE},
        queue_wait_s=0.0,
        run_s=0.0,
    )


def _note(cached: JobResult) -> dict[str, str]:
    note = cached.context.get(NOTE_FIELD)
    return {NOTE_FIELD: note} if note else {}


def age_s(result: JobResult) -> float:
    return max(0.0, time.time() - result.finished_at)
