"""Adaptive batching: a queue, a future per request, a pure "run now?" policy, an injected clock.

Policy (``decide``): while every executor slot is busy, requests accumulate; as soon as a
slot is free the batcher takes everything queued, up to ``max_batch_size`` rows, at once.
There is no fixed wait window: a lone request runs immediately. Only when a
``preferred_batch_size`` is set and ``max_delay_s`` > 0 does it wait, and never longer than
``max_delay_s`` after the oldest request arrived.

``Batcher`` runs the policy: ``submit`` enqueues and awaits its slice of the batch result.
Drain tasks start lazily (one per executor slot) and exit when the queue is empty. Before
taking a batch a drain lets the event loop turn once more, so requests whose bytes have
already arrived are read and ride along (one non-blocking poll, not a wait).
Cancelled requests (client gone) and requests past their deadline are dropped before
inference. A failing batch fails each of its callers with the same error, with one
exception: a batch the model refuses for its data (``InvalidInput``, e.g. a value that
overflows a scaler) runs again without the refused requests (where the error names their
rows) or in halves, down to single requests, so that only the requests holding the refused
rows get the 422 and their batch-mates get their answers.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from modelport.clock import Clock
from modelport.core.signature import NamedArrays
from modelport.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailed,
    ModelportError,
    Overloaded,
)

log = logging.getLogger("modelport.batching")

RunBatch = Callable[[NamedArrays], Awaitable[NamedArrays]]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 128
    max_delay_s: float = 0.0
    preferred_batch_size: int | None = None
    max_queue: int = 4096
    concurrency: int = 1


@dataclass(frozen=True)
class Decision:
    run: bool
    wait_s: float = 0.0  # when not running: re-check after this long (0 = on next event)


def decide(
    queued_rows: int, oldest_wait_s: float, busy_slots: int, policy: BatchPolicy
) -> Decision:
    """Pure: should a batch start now?"""
    if queued_rows == 0 or busy_slots >= policy.concurrency:
        return Decision(run=False)
    target = policy.preferred_batch_size
    if (
        target is not None
        and policy.max_delay_s > 0
        and queued_rows < min(target, policy.max_batch_size)
        and oldest_wait_s < policy.max_delay_s
    ):
        return Decision(run=False, wait_s=policy.max_delay_s - oldest_wait_s)
    return Decision(run=True)


def take_count(row_counts: list[int], max_rows: int) -> int:
    """Pure: how many queued requests (in order) fit in one batch; always at least one."""
    total = 0
    for i, rows in enumerate(row_counts):
        if i and total + rows > max_rows:
            return i
        total += rows
    return len(row_counts)


@dataclass
class BatchStats:
    batches: int = 0
    rows: int = 0
    requests: int = 0
    max_batch_rows: int = 0
    queue_wait_s_total: float = 0.0
    dropped_deadline: int = 0
    dropped_cancelled: int = 0
    rejected_overload: int = 0
    # batches in which the model failed for a reason other than the data (in any part of a
    # split batch), or which it refused for their data as a whole; once each
    failed_batches: int = 0
    # one-row batches, as formed from the queue (not the parts of a split batch), that ran on
    # the idle workers' cores too (core/busy.py; counted by the executor)
    lone_row_batches: int = 0
    # batches the model refused for some requests' data, run again without them (see
    # ``Batcher._attempt``); once each
    split_batches: int = 0

    @classmethod
    def combine(cls, parts: list[BatchStats]) -> BatchStats:
        """The counters of several batchers (e.g. one per HTTP worker) as one: sums, but the
        largest batch for ``max_batch_rows``."""
        total = cls()
        for f in fields(cls):
            values = [getattr(part, f.name) for part in parts]
            if values:
                setattr(total, f.name, max(values) if f.name == "max_batch_rows" else sum(values))
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "requests": self.requests,
            "rows": self.rows,
            "mean_batch_rows": round(self.rows / self.batches, 3) if self.batches else 0.0,
            "max_batch_rows": self.max_batch_rows,
            "mean_queue_wait_ms": round(1000 * self.queue_wait_s_total / self.requests, 4)
            if self.requests
            else 0.0,
            "dropped_deadline": self.dropped_deadline,
            "dropped_cancelled": self.dropped_cancelled,
            "rejected_overload": self.rejected_overload,
            "failed_batches": self.failed_batches,
            "lone_row_batches": self.lone_row_batches,
            "split_batches": self.split_batches,
        }


class _Item:
    __slots__ = ("deadline", "enqueued", "future", "inputs", "rows")

    def __init__(
        self,
        inputs: NamedArrays,
        rows: int,
        future: asyncio.Future[NamedArrays],
        enqueued: float,
        deadline: float | None,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.enqueued = enqueued
        self.deadline = deadline


def _refused(batch: list[_Item], rows: Any) -> list[_Item]:
    """The requests holding the given rows (0-based, of ``batch`` concatenated). None if
    no rows are given, or if they are not all whole numbers in range: a hint the batcher
    cannot trust, or read, is ignored (the batch is halved)."""
    try:
        wanted = sorted({operator.index(r) for r in rows})
    except Exception:  # whatever the model put there: only the hint is lost
        return []
    ends = np.cumsum([it.rows for it in batch])
    if not wanted or wanted[0] < 0 or wanted[-1] >= int(ends[-1]):
        return []
    return [batch[i] for i in sorted(set(np.searchsorted(ends, wanted, side="right").tolist()))]


class _Outcome:
    """What became of one formed batch, for its statistics."""

    __slots__ = ("failed", "split")

    def __init__(self) -> None:
        self.split = False
        self.failed = False


def _concat(items: list[_Item]) -> NamedArrays:
    if len(items) == 1:
        return items[0].inputs
    return {name: np.concatenate([it.inputs[name] for it in items]) for name in items[0].inputs}


class Batcher:
    """Queues requests for one model version and runs them in adaptive batches."""

    def __init__(
        self,
        run_batch: RunBatch,
        policy: BatchPolicy,
        clock: Clock,
        run_part: RunBatch | None = None,
    ) -> None:
        """``run_part`` runs the parts of a batch the model refused for some request's data
        (``_attempt``); default ``run_batch``. The in-process executors' own leaves those
        parts out of ``lone_row_batches``, which counts batches as formed here."""
        self._run_batch = run_batch
        self._run_part = run_part or run_batch
        self.policy = policy
        self._clock = clock
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._busy = 0
        self._drains = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # The loop this batcher serves, found on first use. ``asyncio.get_running_loop()``
        # costs a getpid() system call each time; two per request showed in the profile.
        # A batcher belongs to one event loop (its registry's); a closed one is replaced.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = BatchStats()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(
        self, inputs: NamedArrays, rows: int, deadline: float | None = None
    ) -> NamedArrays:
        return await self.enqueue(inputs, rows, deadline)

    def enqueue(
        self, inputs: NamedArrays, rows: int, deadline: float | None = None
    ) -> asyncio.Future[NamedArrays]:
        """Queue one request; its future gets the outputs (cancel it to withdraw)."""
        if self._closed:
            raise Overloaded("the model version is shutting down", retry_after=1.0)
        if len(self._queue) >= self.policy.max_queue:
            self.stats.rejected_overload += 1
            raise Overloaded(
                f"the queue for this model is full ({self.policy.max_queue} requests)",
                retry_after=1.0,
            )
        loop = self._loop
        if loop is None or loop.is_closed():  # closed: a new loop (tests run several)
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[NamedArrays] = loop.create_future()
        self._queue.append(_Item(inputs, rows, future, self._clock.now(), deadline))
        self._queued_rows += rows
        if self._drains < self.policy.concurrency:
            self._drains += 1
            task = loop.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return future

    def _pop_batch(self) -> list[_Item]:
        now = self._clock.now()
        batch: list[_Item] = []
        total = 0
        limit = self.policy.max_batch_size
        queue = self._queue
        while queue:
            item = queue[0]
            if item.future.done():  # cancelled: the caller went away
                queue.popleft()
                self._queued_rows -= item.rows
                self.stats.dropped_cancelled += 1
                continue
            if item.deadline is not None and now > item.deadline:
                queue.popleft()
                self._queued_rows -= item.rows
                self._expire(item, "it was queued")
                continue
            if batch and total + item.rows > limit:
                break
            queue.popleft()
            self._queued_rows -= item.rows
            batch.append(item)
            total += item.rows
            self.stats.queue_wait_s_total += now - item.enqueued
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                # One more turn of the event loop before taking a batch: requests that have
                # already reached the sockets get read and join this batch instead of the
                # next. It is a non-blocking look (microseconds), not a wait window; under
                # load it doubled M1's mean batch and added ~18% req/s (docs/benchmarks.md).
                await asyncio.sleep(0)
                if not self._queue:  # another drain (concurrency > 1) took it meanwhile
                    break
                oldest = self._clock.now() - self._queue[0].enqueued
                decision = decide(self._queued_rows, oldest, self._busy, self.policy)
                if not decision.run:
                    if decision.wait_s <= 0:
                        return  # all slots busy: the running drains will pick this up
                    await asyncio.sleep(decision.wait_s)
                    continue
                batch = self._pop_batch()
                if batch:
                    self._busy += 1
                    try:
                        await self._execute(batch)
                    finally:
                        self._busy -= 1
        finally:
            self._drains -= 1

    async def _execute(self, batch: list[_Item]) -> None:
        rows = sum(it.rows for it in batch)
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.rows += rows
        if rows > stats.max_batch_rows:
            stats.max_batch_rows = rows
        outcome = _Outcome()
        try:
            await self._attempt(batch, rows, outcome)
        except asyncio.CancelledError:
            # the whole batch: a split one may have halves that have not run yet
            self._fail(batch, Overloaded("the model version is shutting down"))
            raise
        except Exception:  # a fault of the batcher's own: no caller may be left waiting
            log.exception("the batcher failed on a batch of %d rows", rows)
            outcome.failed = True
            self._fail(batch, ModelFailed("the batch could not be completed"))
        finally:
            stats.split_batches += outcome.split
            stats.failed_batches += outcome.failed

    async def _attempt(
        self, batch: list[_Item], rows: int, outcome: _Outcome, is_part: bool = False
    ) -> None:
        """Run ``batch`` (a formed batch, or with ``is_part`` a part of one being split,
        which ``run_part`` runs) and answer each of its callers; ``outcome`` records what
        happened, for the formed batch's statistics.

        A batch the model refuses for its data (``InvalidInput``) is not the fault of every
        request in it: one hostile or out-of-range row would otherwise cost its batch-mates
        their answers. Where the error names the refused rows (``ValueOutOfRange.rows``, as
        the numpy plan's does), the requests holding them get the error and the others run
        again once. Otherwise the batch runs again in halves, down to single requests, and
        only the requests the model refuses alone get the error: a batch of k requests
        then takes at most 2k - 1 model calls in all (each split makes two non-empty
        parts); one refused request among k takes 2·ceil(log2 k) more, which re-run about
        twice the batch's rows. The loop turns between parts, and a request whose caller
        left or whose deadline passed meanwhile is not run again. Any other failure is not
        the data's, and fails the whole batch (or part) at once.
        """
        try:
            run = self._run_part if is_part else self._run_batch
            outputs = await run(_concat(batch))
            for name, value in outputs.items():
                got = value.shape[0] if value.ndim else 1
                if got != rows:
                    raise ModelFailed(
                        f"the model returned {got} rows in output '{name}' for {rows} input rows"
                    )
        except InvalidInput as exc:
            refused = _refused(batch, getattr(exc, "rows", ()))
            if len(batch) == 1 or len(refused) == len(batch):
                self._fail(batch, exc)
                outcome.failed |= not outcome.split  # refused as a whole, not a split's part
                return
            outcome.split = True
            if refused:  # the model named the rows: one more call for the others
                self._fail(refused, exc)
                parts = [[it for it in batch if it not in refused]]
            else:
                half = len(batch) // 2
                parts = [batch[:half], batch[half:]]
            for part in parts:
                await asyncio.sleep(0)  # an inline model would otherwise hold the loop
                live = self._still_wanted(part)
                if live:
                    await self._attempt(live, sum(it.rows for it in live), outcome, is_part=True)
            return
        except ModelportError as exc:
            outcome.failed = True
            self._fail(batch, exc)
            return
        except Exception as exc:
            outcome.failed = True
            log.error("model raised on a batch of %d rows: %s: %s", rows, type(exc).__name__, exc)
            self._fail(batch, ModelFailed(f"the model raised {type(exc).__name__}"))
            return
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(outputs)
            return
        start = 0
        for item in batch:
            end = start + item.rows
            if not item.future.done():
                item.future.set_result({name: v[start:end] for name, v in outputs.items()})
            start = end

    def _still_wanted(self, part: list[_Item]) -> list[_Item]:
        """The requests of a split batch's ``part`` worth running again: not those whose
        caller left, nor those whose deadline passed meanwhile (504, as in the queue)."""
        now = self._clock.now()
        live = []
        for item in part:
            if item.future.done():
                continue
            if item.deadline is not None and now > item.deadline:
                self._expire(item, "its batch was split")
                continue
            live.append(item)
        return live

    def _expire(self, item: _Item, meanwhile: str) -> None:
        """Answer a request whose deadline passed before it ran (504), and count it."""
        self.stats.dropped_deadline += 1
        item.future.set_exception(
            DeadlineExceeded(f"the request's deadline passed while {meanwhile}")
        )

    @staticmethod
    def _fail(batch: list[_Item], exc: ModelportError) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    async def close(self) -> None:
        """Stop accepting work, let queued requests finish (drain), then return."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
