"""The isolated process executor: shared-memory round trips, crashes, restarts, clean-up."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.core._process_worker import (
    layout,
    plain_signature,
    read_slots,
    signature_from_plain,
    write_slots,
)
from modelport.core.busy import BOARD_FILE, BusyBoard, make_board
from modelport.core.process_executor import (
    ProcessExecutor,
    _input_error,
    process_executor_factory,
)
from modelport.core.runtime import ModelConfig
from modelport.core.signature import ContentKind, Signature, Task, TensorSpec
from modelport.errors import (
    BatchTooLarge,
    ConfigError,
    ModelFailed,
    ValueOutOfRange,
    WorkerFailed,
)
from tests.unit.core._process_helpers import ONES, run_once_restarted, segments

# x[0, 0] picks a behaviour: -1 raises, -2 hangs (after writing started-<pid>), -3 is slow,
# -4 writes ran-<rows> and waits (up to 10 s) for a file named go, -5 refuses the data as
# modelport's own numpy plan does (ValueOutOfRange), -6 raises modelport's ConfigError.
MODEL = """
import os, time
import numpy as np

class Model:
    signature = {
        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]},
                    {"name": "pid", "dtype": "int64", "shape": [-1]},
                    {"name": "name", "dtype": "str", "shape": [-1]},
                    {"name": "tag", "dtype": "object", "shape": [-1]}],
    }

    def load(self, path):
        if (path / "broken").exists():
            raise RuntimeError("no weights here")
        self.path = path
        (path / f"pid-{os.getpid()}").write_text("")

    def predict(self, inputs):
        x = inputs["x"]
        first = x.flat[0] if x.size else 0
        if first == -1:
            raise ValueError("negative one is not allowed")
        if first == -5:
            from modelport.errors import ValueOutOfRange
            raise ValueOutOfRange("-5 is out of range")
        if first == -6:
            from modelport.errors import ConfigError
            raise ConfigError("not the data's fault")
        if first == -2:
            (self.path / f"started-{os.getpid()}").write_text("")
            time.sleep(30)
        if first == -3:
            time.sleep(0.05)
        if first == -4:
            (self.path / f"ran-{len(x)}").write_text("")
            for _ in range(1000):
                if (self.path / "go").exists():
                    break
                time.sleep(0.01)
        n = len(x)
        return {"y": x * 2, "pid": np.full(n, os.getpid()),
                "name": np.array(["ok"] * n), "tag": np.array([{"n": n}] * n, dtype=object)}
"""


def write_model(folder: Path, source: str = MODEL) -> Path:
    path = folder / "model.py"
    path.write_text(source)
    return path


def value(x: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), x, dtype=np.float32)}


async def wait_for_file(folder: Path, pattern: str, timeout: float = 10) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise TimeoutError(pattern)


# ── pure pieces: no processes ───────────────────────────────────────────────────────────
def test_layout_round_trips_every_kind_of_array() -> None:
    arrays: dict[str, np.ndarray] = {
        "strided": np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
        "scalar": np.array(7, dtype=np.int64),
        "text": np.array(["a", "bcd"]),
        "big_endian": np.arange(3, dtype=">f8"),
        "empty": np.zeros((0, 5), dtype=np.float64),
        "objects": np.array([{"a": 1}, None], dtype=object),
    }
    slots, size = layout(arrays)
    assert all(offset % 64 == 0 for _, _, _, offset in slots)
    buf = memoryview(bytearray(size))
    write_slots(buf, arrays, slots)
    out = read_slots(buf, slots, copy=True)
    for name, array in arrays.items():
        assert out[name].dtype == array.dtype and out[name].shape == array.shape
        assert out[name].tolist() == array.tolist()
    assert [s[1] is None for s in slots] == [False] * 5 + [True]  # only objects are pickled


def test_signature_crosses_as_plain_data() -> None:
    signature = Signature(
        inputs=(
            TensorSpec(
                "x",
                "float64",
                (-1, 2),
                names=("a", "b"),
                kind=ContentKind.TABLE,
                allow_nonfinite=True,
                value_range=(0.0, 1.0),
            ),
        ),
        outputs=(TensorSpec("probabilities", "float32", (-1, 2), names=("no", "yes")),),
        task=Task.CLASSIFICATION,
        labels=("no", "yes"),
    )
    plain = plain_signature(signature)
    assert b"modelport" not in pickle.dumps(plain)  # builtins only
    assert signature_from_plain(plain) == signature


# ── real worker processes ────────────────────────────────────────────────────────────────
def test_round_trip_growth_and_concurrency(tmp_path: Path) -> None:
    async def main() -> None:
        signature, executor = await process_executor_factory(2)(
            "python", write_model(tmp_path), ModelConfig()
        )
        assert isinstance(executor, ProcessExecutor) and executor.slots == 2
        assert [s.name for s in signature.inputs] == ["x"]
        assert len(executor.pids) == 2 and os.getpid() not in executor.pids
        small = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
        out = await executor.run(small)
        assert out["y"].dtype == np.float32 and out["y"].tolist() == (small["x"] * 2).tolist()
        assert out["name"].tolist() == ["ok", "ok"] and out["tag"].tolist() == [{"n": 2}] * 2
        assert segments()  # the tensors did go through shared memory
        big = value(1, rows=200_000)  # 2.4 MB in, 2.4 MB out: both 1 MiB buffers must grow
        out = await executor.run(big)
        assert out["y"].shape == (200_000, 3) and float(out["y"].sum()) == 1_200_000.0
        outs = await asyncio.gather(
            *(executor.run(value(-3 if i % 2 else i, 4)) for i in range(10))
        )
        assert [o["y"][0, 0] for o in outs] == [-6 if i % 2 else 2 * i for i in range(10)]
        assert {int(o["pid"][0]) for o in outs} == set(executor.pids)  # both workers served
        await executor.close()
        await executor.close()  # twice is harmless

    asyncio.run(main())
    assert segments() == set()
    assert multiprocessing.active_children() == []


def test_model_error_is_model_failed_and_worker_survives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig())
        await executor.start()
        with (
            caplog.at_level(logging.ERROR, "modelport.process_executor"),
            pytest.raises(ModelFailed, match="the model raised ValueError") as info,
        ):
            await executor.run(value(-1))
        assert "negative one" not in str(info.value)  # callers get the class, the log the rest
        assert "negative one is not allowed" in caplog.text and "Traceback" in caplog.text
        out = await executor.run(ONES)
        assert out["y"].tolist() == [[2, 2, 2]]
        assert executor.restarts == 0
        await executor.close()

    asyncio.run(main())


def test_modelport_s_own_refusal_of_the_data_crosses_as_itself(tmp_path: Path) -> None:
    """A ValueOutOfRange raised in the worker stays a 422 with its message (the batcher
    then splits the batch); any other error, modelport's own included, is a model failure."""

    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig())
        await executor.start()
        with pytest.raises(ValueOutOfRange, match="-5 is out of range"):
            await executor.run(value(-5))
        with pytest.raises(ModelFailed, match="the model raised ConfigError"):
            await executor.run(value(-6))
        assert (await executor.run(ONES))["y"].tolist() == [[2, 2, 2]]
        await executor.close()

    asyncio.run(main())
    assert _input_error("modelport.errors.BatchTooLarge") is BatchTooLarge
    for kind in (
        "ValueError",
        "mymodel.errors.ValueOutOfRange",
        "modelport.errors.ConfigError",
        "modelport.errors.nothing",
        "modelport.errors.math",
        "ValueOutOfRange",
    ):
        assert _input_error(kind) is None, kind


def test_killed_worker_fails_its_call_fast_and_is_restarted(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig())
        await executor.start()
        call = asyncio.create_task(executor.run(value(-2)))
        started = await wait_for_file(tmp_path, "started-*")  # the worker is inside predict
        pid = int(started.name.split("-")[1])
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="killed by SIGKILL") as info:
            await asyncio.wait_for(call, 5)
        assert time.monotonic() - killed_at < 5
        assert info.value.kind == "died"
        out = await asyncio.wait_for(executor.run(ONES), 30)  # waits for the restart
        assert out["y"].tolist() == [[2, 2, 2]] and int(out["pid"][0]) != pid
        assert executor.restarts == 1 and pid not in executor.pids
        assert len(list(tmp_path.glob("pid-*"))) == 2  # a fresh process loaded the model
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_idle_worker_death_is_repaired_without_failing_a_call(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig())
        await executor.start()
        (pid,) = executor.pids
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.2)  # noticed through the process sentinel, not by a call
        out = await asyncio.wait_for(executor.run(ONES), 30)
        assert int(out["pid"][0]) != pid and executor.restarts == 1
        await executor.close()

    asyncio.run(main())


# The first worker to load claims a file, says "ready" and dies 0.3 s later; every other
# worker (and any restart) loads slowly, so the death lands while start() still waits.
DIES_AFTER_READY = """
import os, threading, time
import numpy as np

class Model:
    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
                 "outputs": [{"name": "pid", "dtype": "int64", "shape": [-1]}]}

    def load(self, path):
        try:
            os.close(os.open(path / "claimed", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(1.5)
            return
        threading.Timer(0.3, os._exit, (3,)).start()

    def predict(self, inputs):
        return {"pid": np.full(len(inputs["x"]), os.getpid())}
"""


def test_a_worker_dying_while_siblings_still_load_is_restarted(tmp_path: Path) -> None:
    async def main() -> None:
        path = write_model(tmp_path, DIES_AFTER_READY)
        executor = ProcessExecutor("python", path, ModelConfig(), workers=2)
        await executor.start()
        assert len(executor.pids) == 1  # the first worker died during start
        pids = set()
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            calls = [executor.run(ONES) for _ in range(4)]
            for out in await asyncio.wait_for(asyncio.gather(*calls), 30):
                pids.add(int(out["pid"][0]))
        assert len(pids) == 2 and executor.restarts == 1 and len(executor.pids) == 2
        await executor.close()

    asyncio.run(main())


def test_failing_restarts_fail_calls_fast_then_recover(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor("python", write_model(tmp_path), ModelConfig())
        await executor.start()
        (tmp_path / "broken").write_text("")
        os.kill(executor.pids[0], signal.SIGKILL)
        kinds: list[str] = []
        while "restart_failed" not in kinds:
            with pytest.raises(WorkerFailed) as info:
                await asyncio.wait_for(executor.run(ONES), 10)  # never hangs
            kinds.append(info.value.kind)
            assert len(kinds) < 50
        (tmp_path / "broken").unlink()
        out = await run_once_restarted(executor, ONES)  # the back-off: 0.5 s, 1 s, …
        assert out["y"].tolist() == [[2, 2, 2]] and executor.restarts == 1
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_close_kills_a_stuck_worker_and_fails_its_call(tmp_path: Path) -> None:
    async def main() -> None:
        executor = ProcessExecutor(
            "python", write_model(tmp_path), ModelConfig(), stop_timeout_s=0.5
        )
        await executor.start()
        call = asyncio.create_task(executor.run(value(-2)))
        await wait_for_file(tmp_path, "started-*")
        began = time.monotonic()
        await executor.close()
        assert time.monotonic() - began < 5
        with pytest.raises(WorkerFailed):
            await call
        with pytest.raises(WorkerFailed, match="not running"):
            await executor.run(ONES)

    asyncio.run(main())
    assert segments() == set()
    assert multiprocessing.active_children() == []


def test_a_batch_marks_the_http_workers_board_until_its_worker_answers(tmp_path: Path) -> None:
    """The worker processes compute on the cores a sibling HTTP worker would lend to a
    lone row: from the exchange's start to its end this worker is busy on the board, even
    once its caller is gone; a batch withdrawn while it waited for a worker never runs."""
    make_board(tmp_path, 2)
    mine, theirs = BusyBoard(tmp_path / BOARD_FILE, 0), BusyBoard(tmp_path / BOARD_FILE, 1)
    folder = tmp_path / "model"
    folder.mkdir()

    async def quiet_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if theirs.others_quiet():
                return True
            await asyncio.sleep(0.01)
        return False

    async def main() -> None:
        executor = ProcessExecutor("python", write_model(folder), ModelConfig(), board=mine)
        await executor.start()
        assert await quiet_within(1)  # loading the model is not a batch
        first = asyncio.create_task(executor.run(value(-4, 1)))
        await wait_for_file(folder, "ran-1")
        queued = asyncio.create_task(executor.run(value(-4, 3)))  # the one worker is taken
        await asyncio.sleep(0.05)
        for call in (queued, first):
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        assert not await quiet_within(0.1)  # the worker process still computes the first
        (folder / "go").write_text("")
        assert await quiet_within(5)
        assert not list(folder.glob("ran-3"))
        await executor.close()

    asyncio.run(main())
    assert multiprocessing.active_children() == []


def test_load_failure_is_a_config_error(tmp_path: Path) -> None:
    async def main() -> None:
        path = write_model(tmp_path, "raise RuntimeError('no weights here')\n")
        with pytest.raises(ConfigError, match="no weights here"):
            await process_executor_factory(2)("python", path, ModelConfig())

    asyncio.run(main())
    assert segments() == set()
    assert multiprocessing.active_children() == []


def test_no_leaks_reported_when_the_process_exits(tmp_path: Path) -> None:
    """resource_tracker complains at exit about segments nobody unlinked; it must stay quiet."""
    write_model(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os, signal
            from pathlib import Path
            import numpy as np
            from modelport.core.process_executor import ProcessExecutor
            from modelport.core.runtime import ModelConfig

            async def main():
                ex = ProcessExecutor("python", Path({str(tmp_path / "model.py")!r}),
                                     ModelConfig(), workers=2)
                await ex.start()
                await ex.run({{"x": np.ones((100_000, 3), dtype=np.float32)}})
                os.kill(ex.pids[0], signal.SIGKILL)
                for _ in range(4):
                    try:
                        await ex.run({{"x": np.ones((2, 3), dtype=np.float32)}})
                    except Exception:
                        pass
                await ex.close()

            if __name__ == "__main__":
                asyncio.run(main())
                print("done")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "leaked" not in result.stderr and "Traceback" not in result.stderr, result.stderr
