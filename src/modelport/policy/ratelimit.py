"""Rate limits: a token bucket per principal over a ``CounterStore`` and a clock.

``Rate("100/s")`` refills 100 tokens per second up to ``burst`` (default: the count, so
``600/min`` allows 600 at once, then 10/s). The bucket math is ``state.interfaces.take_tokens``;
the store applies it atomically (in-process, or in Redis for several processes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from modelport.clock import Clock
from modelport.errors import InvalidInput, RateLimited
from modelport.state.interfaces import CounterStore

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|min|minute|h|hour)\s*$")
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


@dataclass(frozen=True)
class Rate:
    per_s: float
    burst: int
    text: str

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> Rate:
        """``"10/s"``, ``"600/min"``, ``"1000/h"``; raises ``InvalidInput``."""
        match = _RATE.match(text)
        if not match or float(match.group(1)) <= 0:
            raise InvalidInput(f"rate {text!r} is not N/s, N/min or N/h with N > 0")
        count = float(match.group(1))
        if burst is not None and burst < 1:
            raise InvalidInput("burst must be at least 1")
        return cls(
            per_s=count / _UNIT_S[match.group(2)],
            burst=burst if burst is not None else max(1, math.ceil(count)),
            text=text.strip(),
        )


@dataclass(frozen=True)
class RateStatus:
    """What the ``RateLimit-*`` headers report after a charge."""

    limit: int
    remaining: int
    reset: float

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset))),
        }


class RateLimiter:
    """``charge(bucket, rate)`` takes one token or raises ``RateLimited(retry_after=…)``.

    ``clock`` must be wall-clock time when buckets are shared between processes (Redis).
    """

    def __init__(self, counters: CounterStore, clock: Clock) -> None:
        self._counters = counters
        self._clock = clock

    def charge(self, bucket: str, rate: Rate, cost: float = 1.0) -> RateStatus:
        result = self._counters.take(bucket, cost, rate.per_s, rate.burst, self._clock.now())
        if not result.allowed:
            raise RateLimited(
                f"rate limit of {rate.text} exceeded; retry in {math.ceil(result.retry_after)} s",
                retry_after=result.retry_after,
                limit=rate.burst,
                remaining=0,
                reset=result.reset,
            )
        return RateStatus(rate.burst, math.floor(result.remaining), result.reset)
