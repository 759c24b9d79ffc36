"""Quotas: at most N requests per key per UTC day or calendar month.

The count lives in a ``CounterStore`` named after the key and period. A counter this
process has not seen yet starts from the usage already stored for the period, so a restart
does not hand out a fresh quota.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from dataclasses import dataclass
from typing import Literal

from modelport.clock import Clock
from modelport.errors import InvalidInput, QuotaExceeded
from modelport.state.interfaces import CounterStore, UsageStore

Period = Literal["day", "month"]
_QUOTA = re.compile(r"^\s*(\d+)\s*/\s*(day|month)\s*$")


@dataclass(frozen=True)
class Quota:
    limit: int
    period: Period

    @classmethod
    def parse(cls, text: str) -> Quota:
        """``"10000/day"`` or ``"1000000/month"``; raises ``InvalidInput``."""
        match = _QUOTA.match(text)
        if not match or int(match.group(1)) < 1:
            raise InvalidInput(f"quota {text!r} is not N/day or N/month with N > 0")
        period: Period = "day" if match.group(2) == "day" else "month"
        return cls(int(match.group(1)), period)

    @property
    def text(self) -> str:
        return f"{self.limit}/{self.period}"


def period_bounds(period: Period, now: float) -> tuple[str, float]:
    """First day (``YYYY-MM-DD``) of the UTC period holding ``now``, and when it ends."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        start, end = today, today + dt.timedelta(days=1)
    else:
        start = today.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    end_ts = dt.datetime.combine(end, dt.time(), dt.UTC).timestamp()
    return start.isoformat(), end_ts


class QuotaKeeper:
    """``charge(key_id, quota)`` counts one request or raises ``QuotaExceeded``."""

    def __init__(self, counters: CounterStore, usage: UsageStore, clock: Clock) -> None:
        self._counters = counters
        self._usage = usage
        self._clock = clock
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def charge(self, key_id: str, quota: Quota) -> int:
        """Returns the requests left in the period after this one."""
        now = self._clock.now()
        start, end = period_bounds(quota.period, now)
        name = f"{key_id}:{quota.period}:{start}"
        initial = 0
        with self._lock:
            first = name not in self._seen
            self._seen.add(name)
        if first:
            initial = sum(r.requests for r in self._usage.query(since=start, key_id=key_id))
        ttl = end - now + 86_400  # outlive the period a little; the name changes anyway
        used = self._counters.incr(name, 1, ttl, initial=initial)
        if used > quota.limit:
            self._counters.incr(name, -1, ttl)  # a refused request does not count
            retry = max(1.0, end - now)
            raise QuotaExceeded(
                f"quota of {quota.text} used up; it renews in {math.ceil(retry)} s",
                retry_after=retry,
                limit=quota.limit,
                remaining=0,
                reset=retry,
            )
        return quota.limit - used
