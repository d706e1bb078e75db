"""Recently queued images kept in memory for drawing detection boxes on the answer.

Bounded by total bytes; a miss (evicted, or a bot restarted since) is not an error: the
deliverer downloads the attachment again.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_CAPACITY_BYTES = 256 * 1024 * 1024


class ImageCache:
    """LRU map (request id, image index) → bytes, capped at `capacity_bytes` in total."""

    def __init__(self, capacity_bytes: int = DEFAULT_CAPACITY_BYTES) -> None:
        self._capacity = capacity_bytes
        self._size = 0
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def put(self, request_id: str, index: int, data: bytes) -> None:
        if len(data) > self._capacity:
            return
        self.pop(request_id, index)
        self._items[(request_id, index)] = data
        self._size += len(data)
        while self._size > self._capacity:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)

    def pop(self, request_id: str, index: int) -> bytes | None:
        data = self._items.pop((request_id, index), None)
        if data is not None:
            self._size -= len(data)
        return data
