"""How much of the socket one user may hold: open connections per uid, and how long a request
may take to arrive. Root is not limited (admin tools, the tests' harness)."""
from __future__ import annotations

import threading
from collections import Counter


class ConnectionLimiter:
    """Counts open connections per uid; ``acquire`` refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[int] = Counter()
        self._lock = threading.Lock()

    def acquire(self, uid: int) -> bool:
        with self._lock:
            if uid != 0 and self._open[uid] >= self.limit:
                return False
            self._open[uid] += 1
            return True

    def release(self, uid: int) -> None:
        with self._lock:
            self._open[uid] -= 1
            if self._open[uid] <= 0:
                del self._open[uid]

    def open_for(self, uid: int) -> int:
        with self._lock:
            return self._open[uid]
