"""Usage metering: per key, model, version and UTC day — requests, rows, errors, seconds.

``record`` is an O(1) in-memory add on the request path; ``flush`` hands everything gathered
since the last flush to the ``UsageStore`` in one batch (a background loop calls it every
interval, ``aclose`` calls it once more at shutdown). A failed flush keeps its counts for
the next try, so nothing is lost short of a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import functools
import io
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelport.clock import Clock
from modelport.state.interfaces import UsageRow, UsageStore

log = logging.getLogger("modelport.metering")

Group = tuple[str, str, str, str]  # key id, model, version, day


@dataclass
class _Counts:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    seconds: float = 0.0


@functools.lru_cache(maxsize=8)
def _day(epoch_day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=epoch_day)).isoformat()


def utc_day(now: float) -> str:
    """``YYYY-MM-DD`` (UTC) of a Unix time; cached, as it is asked on every request."""
    return _day(int(now // 86_400))


class Meter:
    """Aggregates usage in memory and flushes it in batches. ``clock`` is wall-clock time."""

    def __init__(
        self, store: UsageStore, clock: Clock, also: Sequence[Callable[[], object]] = ()
    ) -> None:
        """``also``: other batched writes to run on each flush (e.g. keys' last-used times)."""
        self._store = store
        self._clock = clock
        self._also = tuple(also)
        self._pending: dict[Group, _Counts] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        # (start, end, "YYYY-MM-DD") of the UTC day of the last record, as one tuple so a
        # reader in another thread never sees half of an update
        self._day: tuple[float, float, str] = (0.0, 0.0, "")

    def _today(self, now: float) -> str:
        start, end, day = self._day
        if not start <= now < end:  # a new day (or the clock was set back)
            start = now // 86_400 * 86_400
            day = utc_day(now)
            self._day = (start, start + 86_400, day)
        return day

    def record(
        self, key_id: str, model: str, version: str, rows: int, error: bool, seconds: float
    ) -> None:
        group = (key_id, model, version, self._today(self._clock.now()))
        with self._lock:
            counts = self._pending.get(group)
            if counts is None:
                counts = self._pending[group] = _Counts()
            counts.requests += 1
            counts.rows += rows
            counts.errors += int(error)
            counts.seconds += seconds

    @property
    def pending(self) -> int:
        """Requests recorded but not yet flushed."""
        with self._lock:
            return sum(c.requests for c in self._pending.values())

    def flush(self) -> int:
        """Write what is pending; returns the rows written. On failure the counts stay."""
        with self._flush_lock:
            for extra in self._also:
                try:
                    extra()
                except Exception as exc:  # a side write must not hold back the usage counts
                    log.warning("flush of %r failed: %s", extra, type(exc).__name__)
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            rows = [
                UsageRow(*group, c.requests, c.rows, c.errors, c.seconds)
                for group, c in batch.items()
            ]
            try:
                self._store.add(rows)
            except BaseException:
                self._merge_back(batch)
                raise
            return len(rows)

    def _merge_back(self, batch: dict[Group, _Counts]) -> None:
        with self._lock:
            for group, c in batch.items():
                now = self._pending.setdefault(group, _Counts())
                now.requests += c.requests
                now.rows += c.rows
                now.errors += c.errors
                now.seconds += c.seconds

    def start(self, interval_s: float) -> None:
        """Flush every ``interval_s`` seconds in a background task (call inside the loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(interval_s), name="usage-flush"
            )

    async def _run(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as exc:  # keep metering alive; the counts wait for the next try
                log.warning("usage flush failed, will retry: %s", type(exc).__name__)

    async def aclose(self) -> None:
        """Stop the loop and flush what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.flush)


EXPORT_COLUMNS = (
    "key_id",
    "model",
    "version",
    "day",
    "requests",
    "rows",
    "errors",
    "inference_seconds",
)


def export_dicts(rows: Sequence[UsageRow]) -> list[dict[str, object]]:
    """Usage rows in the export shape (JSON objects / CSV columns ``EXPORT_COLUMNS``)."""
    return [
        {
            "key_id": r.key_id,
            "model": r.model,
            "version": r.version,
            "day": r.day,
            "requests": r.requests,
            "rows": r.rows,
            "errors": r.errors,
            "inference_seconds": round(r.infer_seconds, 6),
        }
        for r in rows
    ]


def export_csv(rows: Sequence[UsageRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(export_dicts(rows))
    return out.getvalue()
