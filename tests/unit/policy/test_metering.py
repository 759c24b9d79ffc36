from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from modelport.clock import ManualClock
from modelport.policy.metering import Meter
from modelport.state.interfaces import UsageRow
from modelport.state.memory import MemoryUsageStore

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def test_record_aggregates_and_flush_writes_one_batch() -> None:
    store = MemoryUsageStore()
    clock = ManualClock(T0)
    meter = Meter(store, clock)
    meter.record("k", "iris", "1", rows=3, error=False, seconds=0.25)
    meter.record("k", "iris", "1", rows=2, error=True, seconds=0.25)
    meter.record("k", "iris", "2", rows=1, error=False, seconds=0.0)
    clock.advance(86_400)
    meter.record("k", "iris", "1", rows=1, error=False, seconds=0.0)
    assert meter.pending == 4
    assert store.query() == []
    assert meter.flush() == 3
    assert meter.pending == 0 and meter.flush() == 0
    assert store.query() == [
        UsageRow("k", "iris", "1", "2023-11-14", 2, 5, 1, 0.5),
        UsageRow("k", "iris", "2", "2023-11-14", 1, 1, 0, 0.0),
        UsageRow("k", "iris", "1", "2023-11-15", 1, 1, 0, 0.0),
    ]


def test_the_day_changes_at_utc_midnight_and_when_the_clock_goes_back() -> None:
    store = MemoryUsageStore()
    midnight = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC
    clock = ManualClock(midnight - 0.5)
    meter = Meter(store, clock)
    for step in (0.0, 0.5, 86_399.0, 1.0, -86_401.0):  # the last one: back to the 14th
        clock.advance(step)
        meter.record("k", "m", "1", rows=1, error=False, seconds=0.0)
    meter.flush()
    days = {row.day: row.requests for row in store.query()}
    assert days == {"2023-11-14": 2, "2023-11-15": 2, "2023-11-16": 1}


class FlakyStore(MemoryUsageStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def add(self, rows: Sequence[UsageRow]) -> None:
        if self.fail:
            raise OSError("database is down")
        super().add(rows)


def test_failed_flush_keeps_counts() -> None:
    store = FlakyStore()
    meter = Meter(store, ManualClock(T0))
    meter.record("k", "m", "1", 1, False, 0.0)
    with pytest.raises(OSError):
        meter.flush()
    meter.record("k", "m", "1", 1, False, 0.0)
    store.fail = False
    meter.flush()
    assert [r.requests for r in store.query()] == [2]


def test_concurrent_records_are_all_counted() -> None:
    store = MemoryUsageStore()
    meter = Meter(store, ManualClock(T0))

    def client() -> None:
        for i in range(50):
            meter.record("k", "m", "1", 1, False, 0.0)
            if i % 10 == 0:
                meter.flush()

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meter.flush()
    assert [(r.requests, r.rows) for r in store.query()] == [(800, 800)]


def test_background_flush_and_close() -> None:
    store = MemoryUsageStore()
    touched: list[int] = []
    meter = Meter(store, ManualClock(T0), also=[lambda: touched.append(1)])

    async def scenario() -> None:
        meter.start(0.01)
        meter.record("k", "m", "1", 1, False, 0.0)
        for _ in range(200):
            if store.query():
                break
            await asyncio.sleep(0.01)
        assert [r.requests for r in store.query()] == [1]
        meter.record("k", "m", "1", 1, False, 0.0)
        await meter.aclose()

    asyncio.run(scenario())
    assert [r.requests for r in store.query()] == [2]
    assert touched
