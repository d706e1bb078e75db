"""Exponential backoff with jitter, for riding out Redis outages."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter, for reconnecting to Redis."""

    def __init__(self, first_s: float = 0.1, max_s: float = 10.0) -> None:
        self._first_s, self._max_s, self._attempt = first_s, max_s, 0

    def reset(self) -> None:
        self._attempt = 0

    def next_delay_s(self) -> float:
        delay = min(self._max_s, self._first_s * 2.0**self._attempt)
        self._attempt += 1
        jitter: float = random.uniform(0.5, 1.0)
        return delay * jitter
