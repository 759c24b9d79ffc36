"""The state seams: what policy needs from storage, as small protocols plus plain records.

    KeyStore      API keys by id: put / get / list / revoke / set_secret / touch
    UsageStore    per key, model, version and UTC day: add counts, query them
    CounterStore  shared counters: token buckets (rate limits) and period counters (quotas)
    Stores        the keys + usage pair one backend opens, with its ``close``

Every time here is wall-clock seconds (Unix epoch) passed in by the caller: stores never
read a clock, so tests drive them with ``ManualClock``. ``take_tokens`` is the reference
token-bucket step every ``CounterStore`` implements atomically (Redis mirrors it in Lua).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class KeyRecord:
    """One API key. The secret itself is never stored: only ``secret_hash`` (hex SHA-256)."""

    id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    rate: str | None = None  # "100/s", "600/min"; None = the server default
    burst: int | None = None
    quota: str | None = None  # "10000/day", "1000000/month"; None = the server default
    allow_from: tuple[str, ...] = ()  # IPs/CIDRs; empty = anywhere the server allows

    @property
    def prefix(self) -> str:
        """The visible part of the key, safe to show and log."""
        return f"mp_{self.id}"


@dataclass(frozen=True)
class UsageRow:
    """Counts for one (key, model, version, UTC day). ``day`` is ``YYYY-MM-DD``."""

    key_id: str
    model: str
    version: str
    day: str
    requests: int = 0
    rows: int = 0
    errors: int = 0
    infer_seconds: float = 0.0

    @property
    def group(self) -> tuple[str, str, str, str]:
        return (self.key_id, self.model, self.version, self.day)


class KeyStore(Protocol):
    def put(self, record: KeyRecord) -> None:
        """Insert a new key; raises ``ConfigError`` if the id exists."""
        ...

    def get(self, key_id: str) -> KeyRecord | None: ...

    def list(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        ...

    def revoke(self, key_id: str, at: float) -> bool:
        """Mark revoked; False if no such key. Revoking twice keeps the first time."""
        ...

    def set_secret(self, key_id: str, secret_hash: str) -> bool:
        """Replace the secret (rotation); False if no such key or it is revoked."""
        ...

    def touch(self, last_used: Mapping[str, float]) -> None:
        """Record last-used times, in one batch."""
        ...


class UsageStore(Protocol):
    def add(self, rows: Sequence[UsageRow]) -> None:
        """Add these counts to the stored ones, atomically (all rows or none)."""
        ...

    def query(self, since: str | None = None, key_id: str | None = None) -> list[UsageRow]:
        """Stored rows with ``day >= since``, sorted by day, key, model, version."""
        ...


@dataclass(frozen=True)
class BucketResult:
    allowed: bool
    remaining: float  # tokens left after this call
    retry_after: float  # seconds until ``cost`` tokens are there; 0 when allowed
    reset: float  # seconds until the bucket is full again


class CounterStore(Protocol):
    def take(self, name: str, cost: float, rate: float, burst: float, now: float) -> BucketResult:
        """One atomic ``take_tokens`` step on the bucket ``name``."""
        ...

    def incr(self, name: str, amount: int, ttl_s: float, initial: int = 0) -> int:
        """Add ``amount`` (may be negative) and return the new value. A counter that does
        not exist starts at ``initial`` and disappears ``ttl_s`` seconds after creation."""
        ...


@dataclass
class Stores:
    """What one backend opens: keys and usage, and how to close them."""

    keys: KeyStore
    usage: UsageStore
    close: Callable[[], None] = field(default=lambda: None)


def take_tokens(
    tokens: float | None, updated: float, now: float, cost: float, rate: float, burst: float
) -> tuple[float, BucketResult]:
    """The token-bucket step. ``tokens is None`` is a new, full bucket.

    Refill at ``rate`` tokens/s up to ``burst``; take ``cost`` if there are enough.
    Returns the new token count (to store with time ``now``) and the outcome.
    """
    level = burst if tokens is None else min(burst, tokens + max(0.0, now - updated) * rate)
    if level >= cost:
        level -= cost
        return level, BucketResult(True, level, 0.0, (burst - level) / rate)
    return level, BucketResult(False, level, (cost - level) / rate, (burst - level) / rate)
