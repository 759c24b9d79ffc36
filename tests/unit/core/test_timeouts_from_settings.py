"""``build`` hands the stop and load timeouts of the settings to the registry and to the
process executors it starts (``server.drain_timeout_s``, ``executors.load_timeout_s``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.bootstrap import build
from modelport.core.registry import Registry, VersionState
from modelport.errors import ModelportError
from modelport.settings import load_settings
from tests.unit.core._process_helpers import MODEL  # x[0, 0] == -2 hangs in predict


def _isolated(tmp_path: Path, *, hang: bool = False, **sections: Any) -> Registry:
    """The registry ``build`` makes for one isolated Python model (its load hangs with
    ``hang``), with the settings ``sections`` given."""
    version = tmp_path / "repo" / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL)
    (version.parent / "model.yaml").write_text("isolation: process\n")
    if hang:
        (version / "hang").write_text("")
    tree = {"repository": tmp_path / "repo", "data_dir": tmp_path / "data", **sections}
    return build(load_settings(tree, env={})).registry


def test_a_hanging_isolated_load_fails_after_executors_load_timeout_s(tmp_path: Path) -> None:
    registry = _isolated(tmp_path, hang=True, executors={"load_timeout_s": 0.5})

    async def main() -> None:
        await asyncio.wait_for(registry.load_all(), 30)  # the default would be 300 s
        served = registry.get("m").versions["1"]
        assert served.state is VersionState.FAILED
        assert served.error is not None and "not loaded after 0.5 s" in served.error
        await registry.close()

    asyncio.run(main())
    assert multiprocessing.active_children() == []


def test_close_waits_server_drain_timeout_s_for_a_stuck_isolated_model(tmp_path: Path) -> None:
    registry = _isolated(tmp_path, server={"drain_timeout_s": 0.3})

    async def main() -> None:
        await registry.load_all()
        version = registry.resolve("m")
        assert version.batcher is not None
        stuck = asyncio.ensure_future(
            version.batcher.submit({"x": np.full((1, 3), -2, np.float32)}, 1, None)
        )
        await asyncio.sleep(0.5)  # the batch is running in the worker, for ever
        began = time.monotonic()
        await registry.close()
        # the drain, then the executor's wait for the stuck call: 0.3 s each (5 s each
        # by default)
        assert time.monotonic() - began < 3
        with pytest.raises(ModelportError):
            await stuck

    asyncio.run(main())
    assert multiprocessing.active_children() == []
