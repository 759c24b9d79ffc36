"""What the process executor's test files share: a one-row batch, a misbehaving model,
the shared-memory segments this process holds, and waiting out a restart's back-off."""

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

# A Python model whose folder's marker files make its load misbehave (hang, one-slow, fork,
# crash); in predict, x[0, 0] == -2 writes started-<pid> and hangs, -1 is slow then raises.
MODEL = """
import os, threading, time
from pathlib import Path

class Model:
    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]}

    def load(self, path):
        self.path = path
        if (path / "hang").exists():
            time.sleep(3600)
        if (path / "one-slow").exists():  # the first worker loads at once, the others hang
            try:
                os.close(os.open(path / "first", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                time.sleep(3600)
        if (path / "fork").exists():  # a helper that outlives the worker, holding its pipes
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
        if (path / "crash").exists():  # dies soon after "ready"
            threading.Timer(0.1, os._exit, (3,)).start()

    def predict(self, inputs):
        if inputs["x"].flat[0] == -2:
            (self.path / f"started-{os.getpid()}").write_text("")
            time.sleep(3600)
        if inputs["x"].flat[0] == -1:
            time.sleep(0.3)
            raise ValueError("slow, then wrong")
        return {"y": inputs["x"] * 2}
"""


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
