"""Which HTTP workers are serving right now, shared between the worker processes.

With N HTTP workers each runtime gets cores ÷ N threads, the split that serves load best.
A lone client then leaves cores idle: its one-row batch runs on one thread while the other
workers wait for work. A model that can run a one-row batch on more threads
(``BaseLoadedModel.predict_lone``, e.g. a second onnxruntime session) may do so when
every other worker has been quiet for a while, which this board tells
(docs/architecture.md, "Lending idle cores to a lone row").

The board is a file of one 64-bit slot per worker, each on a cache line of its own (in
the supervisor's shared directory on /dev/shm), mapped into every worker. A worker's slot
holds ``BUSY`` while it runs a batch and otherwise the time (CLOCK_MONOTONIC, shared by
all processes) its last batch ended. A worker is quiet when it is not in a batch and has
not finished one for ``QUIET_NS``: a worker serving even one closed-loop client finishes
a batch every millisecond or so, so it is never quiet, and only a worker that truly has
no work lends its core. Races are harmless: two workers that both see the other quiet
each run one row on borrowed threads, briefly oversubscribing the cores; the answers are
the same either way (a lone-row session is only kept if it answers probes bit for bit).
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("modelport.busy")

BOARD_FILE = "busy"
SLOT_BYTES = 64  # a cache line each: one worker's writes do not evict another's slot
_STRIDE = SLOT_BYTES // 8  # in int64s
BUSY = 2**63 - 1  # a slot's value while its worker runs a batch
QUIET_NS = 5_000_000  # 5 ms without a batch: not serving anyone


def make_board(directory: Path, workers: int) -> None:
    """Create the board for ``workers`` workers (the supervisor does, before starting them)."""
    (directory / BOARD_FILE).write_bytes(bytes(SLOT_BYTES * workers))


class BusyBoard:
    """One worker's view of the board: ``enter``/``leave`` around a batch (nesting counts,
    for executors with several slots), ``lendable`` before choosing how to run one.
    Called on the event loop thread only."""

    def __init__(
        self, path: Path, index: int, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size % SLOT_BYTES or not 0 <= index < size // SLOT_BYTES:
                raise ValueError(f"worker {index} has no slot on a board of {size} bytes")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._slots = memoryview(self._map).cast("q")
        self._others = [i * _STRIDE for i in range(size // SLOT_BYTES) if i != index]
        self._index = index * _STRIDE
        self._clock = clock
        self._depth = 0
        # a restarted worker: its predecessor may have died mid-batch; and loading models is
        # work too, so it starts as just active rather than long quiet
        self._slots[self._index] = clock()

    @classmethod
    def open(cls, directory: Path | None, index: int) -> BusyBoard | None:
        """The board in ``directory``, or None (with a warning) if it cannot be used:
        then no worker borrows cores, which costs a lone client latency, nothing else."""
        if directory is None:
            return None
        try:
            return cls(directory / BOARD_FILE, index)
        except (OSError, ValueError) as exc:
            log.warning("no shared busy board (%s): one-row batches will not borrow cores", exc)
            return None

    def lendable(self) -> bool:
        """May a batch about to run use every core: this worker runs no other batch (a
        thread executor, or another model) and the others are quiet."""
        return self._depth == 0 and self.others_quiet()

    def others_quiet(self) -> bool:
        """True when no other worker is in a batch or has ended one within ``QUIET_NS``."""
        since = self._clock() - QUIET_NS
        slots = self._slots
        return all(slots[i] < since for i in self._others)

    def enter(self) -> None:
        self._depth += 1
        if self._depth == 1:
            self._slots[self._index] = BUSY

    def leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._slots[self._index] = self._clock()
