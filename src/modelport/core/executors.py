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
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from modelport.core.runtime import LoadedModel
from modelport.core.signature import NamedArrays


class Executor(Protocol):
    slots: int

    async def run(self, batch: NamedArrays) -> NamedArrays: ...

    async def close(self) -> None: ...


class ThreadExecutor:
    def __init__(self, model: LoadedModel, threads: int = 1, name: str = "model") -> None:
        self._model = model
        self.slots = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"mp-{name}")

    async def run(self, batch: NamedArrays) -> NamedArrays:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._model.predict, batch
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)


class InlineExecutor:
    """Runs predict directly on the event loop (one slot)."""

    slots = 1

    def __init__(self, model: LoadedModel) -> None:
        self._model = model

    async def run(self, batch: NamedArrays) -> NamedArrays:
        return self._model.predict(batch)

    async def close(self) -> None:
        return None


def choose_executor(
    model: LoadedModel, mode: str, threads: int, name: str, cpu_share: int | None = None
) -> Executor:
    """``mode``: "thread", "inline", or "auto": a thread only if predict releases the GIL
    and this process has more than one core to itself (``cpu_share``: usable cores ÷ HTTP
    workers; None = unknown). On one core the event loop cannot run beside the model
    anyway, so a thread only adds hand-offs: inline measured ~10% more req/s for the ONNX
    MLP pinned to one core, and ~19% with two workers on two cores (docs/benchmarks.md).
    The price, as for every inline model: while a batch computes, this process answers
    nothing else (health checks included); ``--executor thread`` for slow models."""
    if mode == "auto":
        gil_free = getattr(model, "releases_gil", False)
        # threads > 1 (model.yaml ``threads``, ``executors.threads``) asks for a pool
        spare_core = cpu_share is None or cpu_share > 1 or threads > 1
        mode = "thread" if gil_free and spare_core else "inline"
    if mode == "inline":
        return InlineExecutor(model)
    return ThreadExecutor(model, threads, name=name)
