"""A worker's presence in Redis: its heartbeat entry, and the checks it makes on arrival.

The bot refuses requests while no worker heartbeat is fresh, so the heartbeat is what
makes a worker count; it lives here, apart from the batch loop in `service`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from inference.errors import QueueUnavailable
from inference.queue import Keys, WorkerInfo, redis_boundary
from inference.queue.scripts import Scripts
from inference.settings import WorkerSettings

log = logging.getLogger(__name__)

# Entries in the workers index older than this are dropped (their keys expired long ago).
STALE_WORKER_S = 3600


def default_worker_id() -> str:
    """<host>-<pid>-<random>, safe inside a Redis key."""
    host = "".join(
        c if (c.isascii() and c.isalnum()) or c in "-_." else "-" for c in socket.gethostname()
    )
    return f"{host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Presence:
    """Announces one worker (model, capabilities, batch size) and withdraws it."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: WorkerSettings,
        *,
        scripts: Scripts,
        worker_id: str,
        model_id: str,
        capabilities: tuple[str, ...],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._ttl_s = settings.worker_heartbeat_ttl_s
        self._worker_id = worker_id
        # Nothing in the announcement changes while the worker runs: encode it once.
        self._info_json = WorkerInfo(
            worker_id=worker_id,
            host=socket.gethostname(),
            model_id=model_id,
            capabilities=capabilities,
            started_at=time.time(),
            batch_size=settings.batch_size,
        ).to_json()

    async def announce(self) -> dict[str, int]:
        """Write (or refresh) the heartbeat key and this worker's entry in the index; in the
        same round trip, return the shared queue at a glance (jobs outstanding, guilds
        waiting, workers alive) for the metrics."""
        pending, guilds, workers = await self._scripts.beat(
            self._worker_id, self._info_json, ttl_s=self._ttl_s, stale_s=STALE_WORKER_S
        )
        return {"depth": pending, "guilds_waiting": guilds, "workers_alive": workers}

    async def withdraw(self) -> None:
        """Remove the heartbeat now, so the bot stops counting this worker at once."""
        try:
            with redis_boundary():
                await self._redis.zrem(self._keys.workers, self._worker_id)
                await self._redis.delete(self._keys.worker(self._worker_id))
        except QueueUnavailable:
            log.warning("could not remove heartbeat of %s; it will expire", self._worker_id)

    async def warn_if_evicting(self) -> None:
        """Log a warning when Redis's maxmemory-policy could evict queue keys."""
        try:
            with redis_boundary():
                reply = await self._redis.config_get("maxmemory-policy")
        except QueueUnavailable as exc:
            if not isinstance(exc.__cause__, redis_errors.ResponseError):
                raise
            log.info("cannot read Redis maxmemory-policy (CONFIG is disabled); not checked")
            return
        policy = reply.get("maxmemory-policy")
        if policy not in (None, "noeviction", b"noeviction"):
            log.warning(
                "Redis maxmemory-policy is %r: under memory pressure Redis may evict queue "
                "keys (jobs, leases, result streams and their consumer groups); use noeviction",
                policy,
            )
