"""Wall-clock time as a ``Clock``: key expiry, JWT ``exp``, usage days and shared buckets
need seconds since the epoch, comparable across processes and machines."""

from __future__ import annotations

import time


class WallClock:
    """``Clock`` whose ``now()`` is Unix time. Tests pass ``ManualClock(1.7e9)`` instead."""

    def now(self) -> float:
        return time.time()
