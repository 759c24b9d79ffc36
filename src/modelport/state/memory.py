"""In-memory stores for tests and single-process runs. Thread-safe; nothing survives a restart."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence

from modelport.clock import Clock, MonotonicClock
from modelport.errors import ConfigError
from modelport.state.interfaces import (
    BucketResult,
    KeyRecord,
    Stores,
    UsageRow,
    take_tokens,
)


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()

    def put(self, record: KeyRecord) -> None:
        with self._lock:
            if record.id in self._keys:
                raise ConfigError(f"key id {record.id!r} exists")
            self._keys[record.id] = record

    def get(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    def list(self) -> list[KeyRecord]:
        return sorted(self._keys.values(), key=lambda r: (r.created_at, r.id))

    def revoke(self, key_id: str, at: float) -> bool:
        with self._lock:
            record = self._keys.get(key_id)
            if record is None:
                return False
            if record.revoked_at is None:
                self._keys[key_id] = dataclasses.replace(record, revoked_at=at)
            return True

    def set_secret(self, key_id: str, secret_hash: str) -> bool:
        with self._lock:
            record = self._keys.get(key_id)
            if record is None or record.revoked_at is not None:
                return False
            self._keys[key_id] = dataclasses.replace(record, secret_hash=secret_hash)
            return True

    def touch(self, last_used: Mapping[str, float]) -> None:
        with self._lock:
            for key_id, at in last_used.items():
                record = self._keys.get(key_id)
                if record is not None:
                    self._keys[key_id] = dataclasses.replace(record, last_used_at=at)


class MemoryUsageStore:
    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str, str], UsageRow] = {}
        self._lock = threading.Lock()

    def add(self, rows: Sequence[UsageRow]) -> None:
        with self._lock:
            for row in rows:
                old = self._rows.get(row.group)
                if old is not None:
                    row = dataclasses.replace(
                        old,
                        requests=old.requests + row.requests,
                        rows=old.rows + row.rows,
                        errors=old.errors + row.errors,
                        infer_seconds=old.infer_seconds + row.infer_seconds,
                    )
                self._rows[row.group] = row

    def query(self, since: str | None = None, key_id: str | None = None) -> list[UsageRow]:
        with self._lock:
            rows = [
                r
                for r in self._rows.values()
                if (since is None or r.day >= since) and (key_id is None or r.key_id == key_id)
            ]
        return sorted(rows, key=lambda r: (r.day, r.key_id, r.model, r.version))


_PRUNE_AT = 50_000


class MemoryCounterStore:
    """Counters in this process. ``clock`` only times counter expiry (monotonic is fine)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or MonotonicClock()
        self._buckets: dict[str, tuple[float, float, float]] = {}  # tokens, updated, full at
        self._counters: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str, cost: float, rate: float, burst: float, now: float) -> BucketResult:
        with self._lock:
            tokens: float | None = None
            updated = now
            if name in self._buckets:
                tokens, updated, _ = self._buckets[name]
            level, result = take_tokens(tokens, updated, now, cost, rate, burst)
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            self._buckets[name] = (level, max(now, updated), now + result.reset)
            return result

    def _prune(self, now: float) -> None:
        # a bucket that has refilled completely is the same as a new one: forget it
        for name in [n for n, (_, _, full) in self._buckets.items() if full <= now]:
            del self._buckets[name]

    def incr(self, name: str, amount: int, ttl_s: float, initial: int = 0) -> int:
        now = self._clock.now()
        with self._lock:
            value, expires = self._counters.get(name, (initial, now + ttl_s))
            if expires <= now:
                value, expires = initial, now + ttl_s
            value += amount
            self._counters[name] = (value, expires)
            return value


def memory_stores() -> Stores:
    return Stores(keys=MemoryKeyStore(), usage=MemoryUsageStore())
