"""The process executor when things around the model go wrong: shared memory runs out,
workers crash in a loop or hang while loading, callers give up, the process group is
signalled."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.core.process_executor import ProcessExecutor
from modelport.core.runtime import ModelConfig
from modelport.errors import ConfigError, Overloaded, WorkerFailed
from tests.unit.core._process_helpers import MODEL, ONES, run_once_restarted, segments


def executor_for(
    folder: Path,
    source: str = MODEL,
    *,
    buffer_bytes: int = 1 << 20,
    stop_timeout_s: float = 1,
    load_timeout_s: float = 60,
) -> ProcessExecutor:
    (folder / "model.py").write_text(source)
    return ProcessExecutor(
        "python",
        folder / "model.py",
        ModelConfig(),
        buffer_bytes=buffer_bytes,
        stop_timeout_s=stop_timeout_s,
        load_timeout_s=load_timeout_s,
    )


def test_full_shared_memory_is_a_503_not_a_sigbus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main() -> None:
        executor = executor_for(tmp_path, buffer_bytes=4096)
        await executor.start()
        with monkeypatch.context() as patch:
            patch.setattr(os, "posix_fallocate", full)
            with pytest.raises(Overloaded, match="shared memory"):
                await executor.run({"x": np.ones((1000, 3), dtype=np.float32)})
            assert segments() == set()  # the segment that could not be backed is gone
        out = await executor.run(ONES)  # the worker was not touched
        assert out["y"].tolist() == [[2, 2, 2]]
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_a_restart_whose_load_hangs_fails_callers_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path, load_timeout_s=1)
        await executor.start()
        (tmp_path / "hang").write_text("")
        os.kill(executor.pids[0], signal.SIGKILL)
        began = time.monotonic()
        with pytest.raises(WorkerFailed) as info:
            while True:  # calls fail fast while it dies, then wait for the restart
                try:
                    await asyncio.wait_for(executor.run(ONES), 10)
                except WorkerFailed as exc:
                    if exc.kind == "restart_failed":
                        raise
        assert info.value.kind == "restart_failed" and time.monotonic() - began < 5
        assert "not loaded after 1 s" in caplog.text
        (tmp_path / "hang").unlink()
        out = await run_once_restarted(executor, ONES)
        assert out["y"].tolist() == [[2, 2, 2]]
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_a_first_load_that_hangs_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "hang").write_text("")

    async def main() -> None:
        executor = executor_for(tmp_path, load_timeout_s=0.5)
        with pytest.raises(ConfigError, match=r"not loaded after 0\.5 s"):
            await asyncio.wait_for(executor.start(), 10)

    asyncio.run(main())


def test_a_worker_dying_soon_after_ready_is_restarted_with_back_off(tmp_path: Path) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        (tmp_path / "crash").write_text("")
        os.kill(executor.pids[0], signal.SIGKILL)
        began = time.monotonic()
        while time.monotonic() - began < 4:
            await asyncio.sleep(0.05)
        # restarts wait 0, 0.5, 1, 2 s: at most 4 in 4 s (without back-off, one per ~0.3 s)
        assert 1 <= executor.restarts <= 4
        (tmp_path / "crash").unlink()
        out = await asyncio.wait_for(executor.run(ONES), 20)
        assert out["y"].tolist() == [[2, 2, 2]]
        # a worker that served a call proves the slot healthy: the next death restarts at once
        restarts = executor.restarts
        os.kill(executor.pids[0], signal.SIGKILL)
        began = time.monotonic()
        while executor.restarts == restarts:
            await asyncio.sleep(0.02)
        assert time.monotonic() - began < 1.5
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_a_worker_dying_as_it_is_handed_to_a_waiter_leaks_no_memory(tmp_path: Path) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        await executor.run(ONES)  # the worker now has its request and response segments
        worker = await executor._acquire()  # an exchange holds the worker
        waiting = asyncio.ensure_future(executor.run(ONES))  # a second caller waits
        await asyncio.sleep(0)
        executor._release(worker)  # the exchange ends: the worker goes to the waiter...
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.join()  # blocking: the waiter must not run before the death is seen
        worker.finish("was killed by SIGKILL")  # ...and dies before the waiter runs
        out = await asyncio.wait_for(waiting, 30)  # served by the restarted worker
        assert out["y"].tolist() == [[2, 2, 2]]
        assert worker.request is None and worker.response is None
        await executor.close()

    asyncio.run(main())
    assert segments() == set()


def test_a_sigterm_to_the_process_group_leaves_the_workers_to_their_parent(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        pid = executor.pids[0]
        os.kill(pid, signal.SIGTERM)  # as a supervisor's group SIGTERM reaches it
        await asyncio.sleep(0.5)
        out = await executor.run(ONES)
        assert out["y"].tolist() == [[2, 2, 2]]
        assert executor.pids == [pid] and executor.restarts == 0
        began = time.monotonic()
        await executor.close()  # the parent still stops it at once
        assert time.monotonic() - began < 1

    asyncio.run(main())


def test_a_worker_given_sigterm_exits_by_itself_after_the_grace() -> None:
    code = (
        "import time\n"
        "from modelport.core import _process_worker as w\n"
        "w._defer_sigterm(0.3)\n"
        "print('ready', flush=True)\n"
        "time.sleep(20)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        child.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        assert child.poll() is None  # not at once...
        assert child.wait(timeout=5) == 1  # ...but without waiting for a parent for ever


def test_a_cancelled_caller_s_failed_exchange_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        call = asyncio.create_task(executor.run({"x": np.full((1, 3), -1, np.float32)}))
        await asyncio.sleep(0.1)
        call.cancel()  # the caller leaves; the exchange goes on and fails
        while executor._inflight:
            await asyncio.sleep(0.02)
        await executor.close()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_failed_restart_tells_callers_no_path_nor_model_message(tmp_path: Path) -> None:
    source = MODEL.replace(
        "        self.path = path\n",
        "        self.path = path\n"
        "        if (path / 'broken').exists():\n"
        "            raise RuntimeError('secret weights at /srv/private')\n",
    )

    async def main() -> None:
        executor = executor_for(tmp_path, source)
        await executor.start()
        (tmp_path / "broken").write_text("")
        os.kill(executor.pids[0], signal.SIGKILL)
        while True:
            with pytest.raises(WorkerFailed) as info:
                await asyncio.wait_for(executor.run(ONES), 10)
            if info.value.kind == "restart_failed":
                break
        message = info.value.message
        assert "restarting one failed" in message
        assert str(tmp_path) not in message and "secret" not in message
        await executor.close()

    asyncio.run(main())


def test_cancelling_start_leaves_no_worker_running(tmp_path: Path) -> None:
    (tmp_path / "one-slow").write_text("")

    async def main() -> None:
        (tmp_path / "model.py").write_text(MODEL)
        executor = ProcessExecutor(
            "python", tmp_path / "model.py", ModelConfig(), workers=2, stop_timeout_s=0.5
        )
        starting = asyncio.create_task(executor.start())
        while not (tmp_path / "first").exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the first worker is ready, the second still loading
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    asyncio.run(main())
    assert multiprocessing.active_children() == []


def test_a_killed_worker_is_seen_dead_even_if_a_helper_it_forked_lives_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "fork").write_text("")

    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        pid = executor.pids[0]
        call = asyncio.create_task(executor.run({"x": np.full((1, 3), -2, np.float32)}))
        while not (tmp_path / f"started-{pid}").exists():
            await asyncio.sleep(0.02)
        (tmp_path / "fork").unlink()  # its replacement forks no helper
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerFailed, match="SIGKILL"):
            await asyncio.wait_for(call, 5)
        await executor.close()

    asyncio.run(main())


def test_segments_shrink_after_a_run_of_small_calls(tmp_path: Path) -> None:
    def sizes() -> list[int]:
        return sorted(os.stat(f"/dev/shm/{name}").st_size for name in segments())

    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        huge = {"x": np.ones((1_000_000, 3), dtype=np.float32)}  # 12 MB in, 12 MB out
        await executor.run(huge)
        assert min(sizes()) >= 12_000_000
        for _ in range(70):
            out = await executor.run(ONES)
        assert out["y"].tolist() == [[2, 2, 2]]
        assert max(sizes()) <= 1 << 20  # back to the minimum
        out = await executor.run(huge)  # and growing again still works
        assert float(out["y"].sum()) == 6_000_000.0
        await executor.close()

    asyncio.run(main())
    assert segments() == set()
