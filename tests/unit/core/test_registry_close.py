"""The registry's shutdown: it returns even when a model in a worker process is stuck."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.core.busy import BusyBoard
from modelport.core.executors import Executor
from modelport.core.process_executor import ProcessExecutor
from modelport.core.registry import VersionState
from modelport.core.repository import ModelSource, VersionSource
from modelport.core.runtime import Isolation, ModelConfig
from modelport.core.signature import Signature, TensorSpec
from modelport.errors import ModelportError
from tests.conftest import registry_for
from tests.unit.core._process_helpers import MODEL  # x[0, 0] == -2 hangs in predict


async def quick_factory(
    runtime: str, artifact: Path, config: ModelConfig, board: BusyBoard | None = None
) -> tuple[Signature, Executor]:
    executor = ProcessExecutor(runtime, artifact, config, stop_timeout_s=0.5, board=board)
    return await executor.start(), executor


def test_close_returns_when_a_worker_is_stuck_and_fails_its_callers(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(MODEL)

    async def main() -> None:
        config = ModelConfig(runtime="python", isolation=Isolation.PROCESS)
        source = VersionSource("1", tmp_path / "model.py")
        registry = registry_for(
            [ModelSource("m", config, (source,))], quick_factory, drain_grace_s=0.5
        )
        await registry.load_all()
        version = registry.resolve("m")
        assert version.batcher is not None
        stuck = asyncio.ensure_future(
            version.batcher.submit({"x": np.full((1, 3), -2, np.float32)}, 1, None)
        )
        await asyncio.sleep(0.5)  # the batch is running in the worker
        began = time.monotonic()
        await asyncio.wait_for(registry.close(), 15)
        assert time.monotonic() - began < 10
        assert version.state is VersionState.UNLOADED
        with pytest.raises(ModelportError):
            await stuck

    asyncio.run(main())
    assert multiprocessing.active_children() == []


class RecordingExecutor:
    slots = 1
    closed = False

    async def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("a failed version is never served")

    async def close(self) -> None:
        self.closed = True


def test_a_version_failing_after_its_executor_started_stops_it_at_once(tmp_path: Path) -> None:
    started: list[RecordingExecutor] = []

    async def factory(
        runtime: str, artifact: Path, config: ModelConfig, board: BusyBoard | None = None
    ) -> tuple[Signature, Executor]:
        started.append(RecordingExecutor())
        spec = TensorSpec("x", "float32", (-1, 3))
        return Signature(inputs=(spec,), outputs=(spec,)), started[-1]

    async def main() -> None:
        config = ModelConfig(runtime="python", isolation=Isolation.PROCESS)
        # two feature names for three columns: the version fails after the factory returned
        source = ModelSource("m", config, (VersionSource("1", tmp_path),), features=("a", "b"))
        registry = registry_for([source], factory)
        await registry.load_all()
        assert registry.get("m").versions["1"].state is VersionState.FAILED
        assert started and started[0].closed
        await registry.close()

    asyncio.run(main())
