"""The isolated process executor: shared-memory round trips, crashes, restarts, clean-up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.core.process_executor import ProcessExecutor, process_executor_factory
from modelport.core.runtime import ModelConfig
from modelport.errors import ConfigError, ModelFailed, WorkerFailed

MODEL = """
import os, time
import numpy as np

class Model:
    signature = {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]},
                    {"name": "tag", "dtype": "str", "shape": [-1]}],
    }

    def load(self, path):
        (path / f"pid-{os.getpid()}").write_text("")

    def predict(self, inputs):
        x = inputs["x"]
        if x.size and x.flat[0] == -1:
            raise ValueError("negative one is not allowed")
        if x.size and x.flat[0] == -2:
            time.sleep(30)
        return {"y": x * 2, "tag": np.array(["ok"] * len(x), dtype=object)}
"""

NUMERIC_ONLY = MODEL.replace(
    ',\n                    {"name": "tag", "dtype": "str", "shape": [-1]}', ""
).replace(', "tag": np.array(["ok"] * len(x), dtype=object)', "")


def write_model(folder: Path, source: str = MODEL) -> Path:
    path = folder / "model.py"
    path.write_text(source)
    return path


def shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith("psm_")}


def test_round_trip_growth_and_concurrency(tmp_path: Path) -> None:
    before = shm_segments()

    async def main() -> None:
        signature, executor = await process_executor_factory(2)(
            "python", write_model(tmp_path, NUMERIC_ONLY), ModelConfig()
        )
        assert [s.name for s in signature.inputs] == ["x"]
        small = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
        out = await executor.run(small)
        assert out["y"].dtype == np.float32 and out["y"].tolist() == (small["x"] * 2).tolist()
        big = {"x": np.ones((200_000, 3), dtype=np.float32)}  # 2.4 MB > the 1 MiB segments
        out = await executor.run(big)
        assert out["y"].shape == (200_000, 3) and float(out["y"].sum()) == 1_200_000.0
        outs = await asyncio.gather(
            *(executor.run({"x": np.full((4, 3), i, dtype=np.float32)}) for i in range(10))
        )
        assert [int(o["y"][0, 0]) for o in outs] == [2 * i for i in range(10)]
        await executor.close()

    asyncio.run(main())
    assert shm_segments() <= before  # nothing leaked in /dev/shm


def test_object_outputs_fall_back_to_pickling(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig(), workers=1)
        await executor.start()
        out = await executor.run({"x": np.zeros((3, 3), dtype=np.float32)})
        assert out["tag"].tolist() == ["ok"] * 3
        await executor.close()

    asyncio.run(main())


def test_model_error_is_model_failed_and_worker_survives(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig(), workers=1)
        await executor.start()
        with pytest.raises(ModelFailed, match="ValueError") as info:
            await executor.run({"x": np.full((1, 3), -1, dtype=np.float32)})
        assert "negative one" not in str(info.value)  # the message stays in the log
        out = await executor.run({"x": np.ones((1, 3), dtype=np.float32)})
        assert out["y"].tolist() == [[2, 2, 2]]
        assert executor.restarts == 0
        await executor.close()

    asyncio.run(main())


def test_killed_worker_fails_fast_and_is_restarted(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig(), workers=1)
        await executor.start()
        (pid_file,) = tmp_path.glob("pid-*")
        pid = int(pid_file.name.split("-")[1])
        call = asyncio.create_task(executor.run({"x": np.full((1, 3), -2, dtype=np.float32)}))
        await asyncio.sleep(0.3)  # the worker is now inside predict (sleeping)
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="died"):
            await asyncio.wait_for(call, 5)
        assert time.monotonic() - started < 5
        out = await asyncio.wait_for(executor.run({"x": np.ones((1, 3), dtype=np.float32)}), 60)
        assert out["y"].tolist() == [[2, 2, 2]]
        assert executor.restarts == 1
        assert len(list(tmp_path.glob("pid-*"))) == 2  # a fresh process loaded the model
        await executor.close()

    asyncio.run(main())


def test_load_failure_is_a_config_error(tmp_path: Path) -> None:
    async def main() -> None:
        path = write_model(tmp_path, "raise RuntimeError('no weights here')\n")
        with pytest.raises(ConfigError, match="no weights here"):
            await process_executor_factory(1)("python", path, ModelConfig())

    asyncio.run(main())
