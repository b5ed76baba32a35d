"""The recorder's write queue: FIFO bounded in bytes and messages between the callbacks and the writer thread.

A full queue refuses a message (the recorder drops and counts it) instead of blocking a
subscription callback; control items (open or close a bag) are always accepted.
"""

from __future__ import annotations

import collections
import threading


class BoundedQueue:
    """FIFO bounded in bytes and messages; control items (size None) are always accepted."""

    def __init__(self, max_bytes: int, max_messages: int):
        self.max_bytes, self.max_messages = max_bytes, max_messages
        self._items: collections.deque = collections.deque()
        self._bytes = 0
        self._in_flight = 0
        self._cond = threading.Condition()

    def put(self, item, size: int | None) -> bool:
        with self._cond:
            if size is not None and (self._bytes + size > self.max_bytes or len(self._items) >= self.max_messages):
                return False
            self._items.append((item, size or 0))
            self._bytes += size or 0
            self._cond.notify()
            return True

    def get(self, timeout: float):
        """The oldest item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items and not self._cond.wait(timeout):
                return None
            if not self._items:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            self._in_flight += 1
            return item

    def done(self) -> None:
        """The consumer finished the item it got last."""
        with self._cond:
            self._in_flight -= 1

    def idle(self) -> bool:
        """Nothing queued and nothing being worked on."""
        with self._cond:
            return not self._items and not self._in_flight

    def depth(self) -> tuple[int, int]:
        with self._cond:
            return len(self._items), self._bytes
