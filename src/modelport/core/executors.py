"""Executors run a model's batched predict.

``ThreadExecutor`` uses a small thread pool, so the event loop keeps reading requests while
the model computes: right for runtimes whose predict releases the GIL (onnxruntime), when
the process has a second core for the loop to run on.
``InlineExecutor`` calls predict on the event loop itself: for models whose predict is
mostly Python holding the GIL (small scikit-learn pipelines), a thread only adds hand-offs
and GIL contention — measured in docs/benchmarks.md — while requests that arrive during the
call simply wait in the socket buffers and form the next batch. ``ProcessExecutor``
(``core/process_executor.py``, worker side in ``core/_process_worker.py``) isolates
Python-heavy or untrusted models in worker processes.

With several HTTP workers, the thread and inline executors mark this worker busy on the
shared ``BusyBoard`` (``core/busy.py``) while a batch runs, and run a one-row batch through
the model's ``predict_lone`` (more threads: the idle workers' cores) when every other worker
has been quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from modelport.core.batching import BatchStats
from modelport.core.busy import BusyBoard
from modelport.core.runtime import BaseLoadedModel, LoadedModel
from modelport.core.signature import NamedArrays

Predict = Callable[[NamedArrays], NamedArrays]
log = logging.getLogger("modelport.executors")


class Executor(Protocol):
    slots: int

    async def run(self, batch: NamedArrays) -> NamedArrays: ...

    async def close(self) -> None: ...


class LendingExecutor:
    """The busy-board part both in-process executors share: ``pick`` the predict for a
    batch, run it between ``board.enter()`` and ``board.leave()``, and ``count`` it.
    ``stats``: the batcher's, where one-row batches on borrowed cores are counted (the
    registry sets it)."""

    def __init__(self, model: LoadedModel, board: BusyBoard | None) -> None:
        self.model = model
        self.stats: BatchStats | None = None
        self._predict: Predict = model.predict
        self._board = board
        # only a runtime's own model class offers a lone-row predict (core/runtime.py)
        lone = model.predict_lone if isinstance(model, BaseLoadedModel) else None
        self._lone: Predict | None = lone if board is not None else None

    def pick(self, batch: NamedArrays) -> Predict:
        lone = self._lone
        if lone is not None and len(next(iter(batch.values()))) == 1:
            assert self._board is not None
            if self._board.lendable():
                return lone
        return self._predict

    def count(self, predict: Predict, formed: bool) -> None:
        if formed and predict is self._lone and self.stats is not None:
            self.stats.lone_row_batches += 1

    async def run(self, batch: NamedArrays, *, formed: bool = True) -> NamedArrays:
        """``formed``: False for a part of a batch the batcher split (``run_part``)."""
        raise NotImplementedError

    async def run_part(self, batch: NamedArrays) -> NamedArrays:
        """Run a part of a batch the batcher split after the model refused it (the
        ``Batcher``'s ``run_part``): a one-row part may borrow cores like any batch, but
        ``lone_row_batches`` counts only batches as the batcher formed them."""
        return await self.run(batch, formed=False)


class ThreadExecutor(LendingExecutor):
    def __init__(
        self,
        model: LoadedModel,
        threads: int = 1,
        name: str = "model",
        board: BusyBoard | None = None,
    ) -> None:
        super().__init__(model, board)
        self.slots = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"mp-{name}")

    async def run(self, batch: NamedArrays, *, formed: bool = True) -> NamedArrays:
        loop = asyncio.get_running_loop()
        board = self._board
        if board is None:
            return await loop.run_in_executor(self._pool, self._predict, batch)
        predict = self.pick(batch)
        board.enter()
        try:
            work = self._pool.submit(predict, batch)
            outputs = await asyncio.wrap_future(work, loop=loop)
        except asyncio.CancelledError:
            # the caller stopped waiting (shutdown), the thread may not have: the worker
            # stays busy on the board until it ends (a batch still queued ends at once)
            work.add_done_callback(lambda _: _call_on(loop, board.leave))
            raise
        except BaseException:
            board.leave()
            raise
        board.leave()
        self.count(predict, formed)
        return outputs

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop``'s thread, from any thread; nothing if the loop is
    closed (the process is shutting down)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


# ``auto``'s inline executor moves a model to a thread after this many batches in a row
# took longer than SLOW_BATCH_S each (wall time): meanwhile the event loop answered
# nothing, health checks and other models included. One slow batch (a GC pause, a busy
# machine) is not enough. For a model this slow the hand-off (~0.1 ms) is small; a
# GIL-bound predict also makes the loop wait for the GIL now and then (not measured).
# Batches grow with load, so a model fast per row can move under a long peak; that is
# the point (the loop was blocked), and ``--executor inline`` keeps it on the loop.
SLOW_BATCH_S = 0.05
SLOW_BATCHES = 3


class InlineExecutor(LendingExecutor):
    """Runs predict directly on the event loop (one slot). With ``move_when_slow`` (what
    ``auto`` picks), a model whose batches keep taking over SLOW_BATCH_S moves to a
    one-thread ``ThreadExecutor`` for good, so the loop keeps answering while it
    computes; ``clock`` is injectable for tests."""

    slots = 1

    def __init__(
        self,
        model: LoadedModel,
        board: BusyBoard | None = None,
        *,
        move_when_slow: bool = False,
        name: str = "model",
        label: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(model, board)
        self._watch = move_when_slow
        self._name = name
        self._label = label or name
        self._clock = clock
        self._slow_in_a_row = 0
        self.moved: ThreadExecutor | None = None

    async def run(self, batch: NamedArrays, *, formed: bool = True) -> NamedArrays:
        if self.moved is not None:
            return await self.moved.run(batch, formed=formed)
        if not self._watch:
            return self._run(batch, formed)
        start = self._clock()
        try:
            return self._run(batch, formed)
        finally:  # a batch counts by how long it held the loop, whether it raised or not
            if self._clock() - start <= SLOW_BATCH_S:
                self._slow_in_a_row = 0
            else:
                self._slow_in_a_row += 1
                if self._slow_in_a_row >= SLOW_BATCHES:
                    self._move()

    def _run(self, batch: NamedArrays, formed: bool) -> NamedArrays:
        board = self._board
        if board is None:
            return self._predict(batch)
        predict = self.pick(batch)
        board.enter()
        try:
            outputs = predict(batch)
        finally:
            board.leave()
        self.count(predict, formed)
        return outputs

    def _move(self) -> None:
        log.warning(
            "%s: %d batches in a row took over %.0f ms each on the event loop, which "
            "answered nothing meanwhile (health checks included); its batches run on a "
            "thread from now on (--executor inline keeps them on the loop)",
            self._label,
            SLOW_BATCHES,
            SLOW_BATCH_S * 1000,
        )
        self.moved = ThreadExecutor(self.model, 1, name=self._name, board=self._board)
        self.moved.stats = self.stats

    async def close(self) -> None:
        if self.moved is not None:
            await self.moved.close()


def choose_executor(
    model: LoadedModel,
    mode: str,
    threads: int,
    name: str,
    cpu_share: int | None = None,
    board: BusyBoard | None = None,
    label: str | None = None,
) -> Executor:
    """``mode``: "thread", "inline", or "auto": a thread only if predict releases the GIL
    and this process has more than one core to itself (``cpu_share``: usable cores ÷ HTTP
    workers; None = unknown). On one core the event loop cannot run beside the model
    anyway, so a thread only adds hand-offs: inline measured ~10% more req/s for the ONNX
    MLP pinned to one core, and ~19% with two workers on two cores (docs/benchmarks.md).
    The price of inline: while a batch computes, this process answers nothing else
    (health checks included), so ``auto``'s inline executor moves a model whose batches
    keep taking over SLOW_BATCH_S to a thread (``InlineExecutor``); ``--executor inline``
    never moves it.
    ``board``: the HTTP workers' shared busy board, if there are several. ``name`` names
    the threads; ``label`` (default ``name``) the model in the log, e.g. "iris v1"."""
    if mode == "auto":
        gil_free = getattr(model, "releases_gil", False)
        # threads > 1 (model.yaml ``threads``, ``executors.threads``) asks for a pool
        spare_core = cpu_share is None or cpu_share > 1 or threads > 1
        if not (gil_free and spare_core):  # inline, yet off the loop should it prove slow
            return InlineExecutor(model, board, move_when_slow=True, name=name, label=label)
        mode = "thread"
    if mode == "inline":
        return InlineExecutor(model, board, name=name, label=label)
    return ThreadExecutor(model, threads, name=name, board=board)
