"""One suite for every CounterStore (memory, Redis): token buckets and period counters."""

from __future__ import annotations

import threading

import pytest

from modelport.clock import ManualClock
from modelport.state.interfaces import CounterStore, take_tokens


def test_take_tokens_reference_math() -> None:
    level, r = take_tokens(None, 0.0, 100.0, 1, rate=2.0, burst=3)
    assert (level, r.allowed, r.remaining, r.retry_after, r.reset) == (2, True, 2, 0.0, 0.5)
    level, r = take_tokens(0.0, 100.0, 100.25, 1, rate=2.0, burst=3)
    assert not r.allowed and level == 0.5 and r.retry_after == pytest.approx(0.25)
    # refill never exceeds the burst, and a clock going backwards refills nothing
    level, _ = take_tokens(1.0, 100.0, 1e6, 0, rate=2.0, burst=3)
    assert level == 3
    level, _ = take_tokens(1.0, 100.0, 50.0, 0, rate=2.0, burst=3)
    assert level == 1


def test_bucket_allows_burst_then_refills(counters: CounterStore, clock: ManualClock) -> None:
    now = clock.now()
    results = [counters.take("k", 1, rate=1.0, burst=3, now=now) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert results[2].remaining == pytest.approx(0)
    assert results[3].retry_after == pytest.approx(1.0)
    assert results[3].reset == pytest.approx(3.0)
    assert counters.take("k", 1, rate=1.0, burst=3, now=now + 0.5).allowed is False
    assert counters.take("k", 1, rate=1.0, burst=3, now=now + 1.01).allowed is True
    # buckets are independent
    assert counters.take("other", 1, rate=1.0, burst=3, now=now).allowed is True


def test_bucket_is_atomic_under_threads(counters: CounterStore, clock: ManualClock) -> None:
    now = clock.now()
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            r = counters.take("shared", 1, rate=0.001, burst=50, now=now)
            with lock:
                allowed.append(r.allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 50


def test_incr_starts_at_initial_and_adds(counters: CounterStore) -> None:
    assert counters.incr("q", 1, ttl_s=60, initial=10) == 11
    assert counters.incr("q", 1, ttl_s=60, initial=99) == 12  # initial only for a new counter
    assert counters.incr("q", -1, ttl_s=60) == 11
    assert counters.incr("fresh", 5, ttl_s=60) == 5


def test_memory_counter_expires(clock: ManualClock) -> None:
    from modelport.state.memory import MemoryCounterStore

    store = MemoryCounterStore(clock)
    assert store.incr("q", 1, ttl_s=10) == 1
    clock.advance(10)
    assert store.incr("q", 1, ttl_s=10) == 1
