from __future__ import annotations

import pytest

from modelport.clock import ManualClock
from modelport.errors import InvalidInput, RateLimited
from modelport.policy.ratelimit import Rate, RateLimiter
from modelport.state.memory import MemoryCounterStore


def test_parse_rate() -> None:
    assert Rate.parse("10/s") == Rate(10.0, 10, "10/s")
    assert Rate.parse("600/min") == Rate(10.0, 600, "600/min")
    assert Rate.parse("600/min", burst=5).burst == 5
    assert Rate.parse("0.5/s").burst == 1
    for bad in ("10", "10/day", "0/s", "-1/s", "x/s"):
        with pytest.raises(InvalidInput):
            Rate.parse(bad)


def test_bucket_limits_then_recovers_after_the_window() -> None:
    clock = ManualClock(1_700_000_000.0)
    limiter = RateLimiter(MemoryCounterStore(clock), clock)
    rate = Rate.parse("2/s")
    first = limiter.charge("k", rate)
    assert first.headers() == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "1",
        "RateLimit-Reset": "1",
    }
    limiter.charge("k", rate)
    with pytest.raises(RateLimited) as caught:
        limiter.charge("k", rate)
    err = caught.value
    assert err.code == "rate_limited"
    assert err.retry_after == pytest.approx(0.5)
    assert err.headers["RateLimit-Limit"] == "2"
    assert err.headers["RateLimit-Remaining"] == "0"
    assert err.headers["RateLimit-Reset"] == "1"
    clock.advance(0.5)
    limiter.charge("k", rate)
    limiter.charge("other", rate)  # other buckets are separate
