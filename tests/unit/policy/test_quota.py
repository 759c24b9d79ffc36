from __future__ import annotations

import datetime as dt

import pytest

from modelport.clock import ManualClock
from modelport.errors import InvalidInput, QuotaExceeded, RateLimited
from modelport.policy.quota import Quota, QuotaKeeper, period_bounds
from modelport.state.interfaces import UsageRow
from modelport.state.memory import MemoryCounterStore, MemoryUsageStore

NOON = dt.datetime(2024, 2, 28, 12, tzinfo=dt.UTC).timestamp()


def test_parse_quota() -> None:
    assert Quota.parse("100/day") == Quota(100, "day")
    assert Quota.parse(" 5 / month ").text == "5/month"
    for bad in ("100", "0/day", "1/week"):
        with pytest.raises(InvalidInput):
            Quota.parse(bad)


def test_period_bounds() -> None:
    start, end = period_bounds("day", NOON)
    assert start == "2024-02-28" and end == NOON + 12 * 3600
    start, end = period_bounds("month", NOON)
    assert start == "2024-02-01"
    assert end == dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()
    assert period_bounds("month", dt.datetime(2024, 12, 31, tzinfo=dt.UTC).timestamp())[1] == (
        dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()
    )


def test_quota_counts_resumes_from_stored_usage_and_renews() -> None:
    clock = ManualClock(NOON)
    usage = MemoryUsageStore()
    usage.add([UsageRow("k", "iris", "1", "2024-02-28", requests=2)])
    usage.add([UsageRow("k", "iris", "1", "2024-02-27", requests=50)])  # yesterday: not counted
    keeper = QuotaKeeper(MemoryCounterStore(clock), usage, clock)
    quota = Quota(3, "day")
    assert keeper.charge("k", quota) == 0
    with pytest.raises(QuotaExceeded) as caught:
        keeper.charge("k", quota)
    assert isinstance(caught.value, RateLimited)  # 429 like a rate limit, with its own code
    assert caught.value.code == "quota_exceeded"
    assert caught.value.retry_after == pytest.approx(12 * 3600)
    with pytest.raises(QuotaExceeded):
        keeper.charge("k", quota)  # refusals do not count, but do not free anything either
    clock.advance(12 * 3600)  # next day
    assert keeper.charge("k", quota) == 2
    assert keeper.charge("other", quota) == 2
