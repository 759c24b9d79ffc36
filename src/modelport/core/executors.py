"""Executors run a model's batched predict off the event loop.

``ThreadExecutor`` uses a small thread pool: right for runtimes that release the GIL
(onnxruntime, numpy, most of scikit-learn). ``ProcessExecutor`` (``core/process_executor.py``)
isolates Python-heavy or untrusted models in worker processes.
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
