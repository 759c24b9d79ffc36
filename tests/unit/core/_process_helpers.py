"""What the process executor's test files share: a one-row batch, the shared-memory
segments this process holds, and waiting out a restart's back-off."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np

from modelport.core.executors import Executor
from modelport.core.signature import NamedArrays
from modelport.errors import WorkerFailed

ONES = {"x": np.ones((1, 3), dtype=np.float32)}


def segments() -> set[str]:
    """This process's shared-memory segments (the executor names them mp<pid>_…)."""
    shm = Path("/dev/shm")
    prefix = f"mp{os.getpid()}_"
    return {p.name for p in shm.iterdir() if p.name.startswith(prefix)} if shm.exists() else set()


async def run_once_restarted(
    executor: Executor, batch: NamedArrays, within_s: float = 20
) -> NamedArrays:
    """``executor.run(batch)`` once a restart has succeeded: the back-off retries it, and
    calls fail with WorkerFailed until then."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await executor.run(batch)
        except WorkerFailed:
            assert time.monotonic() < deadline, f"no restart within {within_s} s"
            await asyncio.sleep(0.1)
