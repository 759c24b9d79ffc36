"""The workers' shared busy board, the executors that mark it and pick a lone-row predict,
and the onnxruntime lone-row session they pick."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.core.batching import BatchStats
from modelport.core.busy import BOARD_FILE, QUIET_NS, BusyBoard, make_board
from modelport.core.discovery import RuntimeTable
from modelport.core.executors import InlineExecutor, ThreadExecutor, choose_executor
from modelport.core.runtime import ModelConfig
from modelport.core.signature import NamedArrays
from modelport.errors import ConfigError
from tests.conftest import write_mlp_onnx


class FakeClock:
    """CLOCK_MONOTONIC as every worker reads it: one clock for all views."""

    def __init__(self) -> None:
        self.ns = 10 * QUIET_NS

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def boards(tmp_path: Path, clock: FakeClock) -> tuple[BusyBoard, BusyBoard]:
    """Two workers' views of one board, as two processes would map it."""
    make_board(tmp_path, 2)
    return BusyBoard(tmp_path / BOARD_FILE, 0, clock), BusyBoard(tmp_path / BOARD_FILE, 1, clock)


def test_a_worker_is_quiet_only_when_out_of_a_batch_for_a_while(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock
) -> None:
    mine, theirs = boards
    assert mine.others_quiet() and theirs.others_quiet()  # nobody has served yet
    theirs.enter()
    assert not mine.others_quiet()
    clock.ns += 10 * QUIET_NS  # a long batch is still a batch
    assert not mine.others_quiet()
    theirs.enter()  # a second slot of a thread executor
    theirs.leave()
    assert not mine.others_quiet()  # one batch still running
    theirs.leave()
    assert not mine.others_quiet()  # just finished: its client will be back
    clock.ns += QUIET_NS - 1
    assert not mine.others_quiet()
    clock.ns += 2
    assert mine.others_quiet()
    assert theirs.others_quiet()  # a worker does not wait for itself


def test_a_restarted_worker_clears_what_its_predecessor_left(
    tmp_path: Path, clock: FakeClock
) -> None:
    make_board(tmp_path, 2)
    dead = BusyBoard(tmp_path / BOARD_FILE, 1, clock)
    dead.enter()  # and the process dies mid-batch
    other = BusyBoard(tmp_path / BOARD_FILE, 0, clock)
    assert not other.others_quiet()
    BusyBoard(tmp_path / BOARD_FILE, 1, clock)  # the supervisor starts worker 1 again
    assert other.others_quiet()


def test_a_board_that_cannot_be_used_means_no_lending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert BusyBoard.open(None, 0) is None
    with caplog.at_level(logging.WARNING):
        assert BusyBoard.open(tmp_path, 0) is None  # no board file
        make_board(tmp_path, 2)
        assert BusyBoard.open(tmp_path, 2) is None  # no slot for a third worker
        (tmp_path / "odd").mkdir()
        (tmp_path / "odd" / BOARD_FILE).write_bytes(b"\0" * 12)  # not whole slots
        assert BusyBoard.open(tmp_path / "odd", 0) is None
    assert caplog.text.count("no shared busy board") == 3
    assert BusyBoard.open(tmp_path, 1) is not None


class Model:
    """Records which predict ran each batch, and whether the board showed it busy. Has no
    lone-row predict, as most runtimes."""

    def __init__(self, watcher: BusyBoard | None = None, fail: bool = False) -> None:
        self.calls: list[tuple[str, int, bool]] = []
        self._watcher = watcher
        self._fail = fail

    def _record(self, kind: str, batch: NamedArrays) -> NamedArrays:
        seen_busy = self._watcher is not None and not self._watcher.others_quiet()
        self.calls.append((kind, len(batch["x"]), seen_busy))
        if self._fail:
            raise RuntimeError("boom")
        return {"y": batch["x"] * 2}

    def predict(self, batch: NamedArrays) -> NamedArrays:
        return self._record("predict", batch)


class LoneModel(Model):
    def predict_lone(self, batch: NamedArrays) -> NamedArrays:
        return self._record("lone", batch)


def _rows(n: int) -> NamedArrays:
    return {"x": np.arange(n, dtype=np.float64).reshape(n, 1)}


@pytest.mark.parametrize("kind", ["inline", "thread"])
def test_one_row_borrows_cores_only_while_the_others_are_quiet(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock, kind: str
) -> None:
    mine, theirs = boards
    model = LoneModel(watcher=theirs)
    executor = choose_executor(model, kind, 1, "m", board=mine)  # type: ignore[arg-type]
    assert isinstance(executor, InlineExecutor if kind == "inline" else ThreadExecutor)
    executor.stats = BatchStats()

    async def main() -> None:
        assert (await executor.run(_rows(1)))["y"].tolist() == [[0.0]]
        await executor.run(_rows(3))  # a real batch: the share of cores it was given
        theirs.enter()
        await executor.run(_rows(1))  # another worker is computing: no borrowing
        theirs.leave()
        clock.ns += QUIET_NS // 2
        await executor.run(_rows(1))  # ... or has just served someone
        clock.ns += QUIET_NS
        await executor.run(_rows(1))
        await executor.close()

    asyncio.run(main())
    # every batch ran with this worker marked busy for the others to see
    assert model.calls == [
        ("lone", 1, True),
        ("predict", 3, True),
        ("predict", 1, True),
        ("predict", 1, True),
        ("lone", 1, True),
    ]
    assert executor.stats.lone_row_batches == 2
    clock.ns += QUIET_NS + 1
    assert theirs.others_quiet()  # and nothing is left marked busy


def test_a_failed_batch_does_not_leave_the_worker_marked_busy(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock
) -> None:
    mine, theirs = boards
    executor = InlineExecutor(LoneModel(fail=True), mine)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(executor.run(_rows(1)))
    clock.ns += QUIET_NS + 1
    assert theirs.others_quiet()


def test_without_a_board_or_a_lone_predict_every_batch_runs_as_before(
    boards: tuple[BusyBoard, BusyBoard],
) -> None:
    mine, theirs = boards
    unboarded = LoneModel()
    asyncio.run(InlineExecutor(unboarded).run(_rows(1)))  # type: ignore[arg-type]
    plain = Model(watcher=theirs)
    asyncio.run(InlineExecutor(plain, mine).run(_rows(1)))  # type: ignore[arg-type]
    assert unboarded.calls == [("predict", 1, False)]
    assert plain.calls == [("predict", 1, True)]  # still marks the board for the others


# ── the onnxruntime side ─────────────────────────────────────────────────────────────────
def _load(path: Path, **options: Any) -> Any:
    return RuntimeTable.discover().get("onnx").load(path, ModelConfig(options=options))


def test_the_lone_row_session_gives_the_same_answers_on_more_threads(tmp_path: Path) -> None:
    model = _load(write_mlp_onnx(tmp_path / "mlp.onnx"), intra_op_threads=1, lone_row_threads=2)
    assert model._lone_session.get_session_options().intra_op_num_threads == 2
    assert model._session.get_session_options().intra_op_num_threads == 1
    model.warmup()  # both sessions
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        for _ in range(20):
            row = (rng.standard_normal((1, 64)) * scale).astype(np.float32)
            lone, plain = model.predict_lone({"x": row}), model.predict({"x": row})
            np.testing.assert_array_equal(lone["y"], plain["y"])  # bit for bit


@pytest.mark.parametrize(
    "options",
    [{}, {"intra_op_threads": 2, "lone_row_threads": 2}, {"lone_row_threads": 0}],
)
def test_no_lone_row_session_unless_it_adds_threads(tmp_path: Path, options: Any) -> None:
    model = _load(write_mlp_onnx(tmp_path / "mlp.onnx", width=16), **options)
    assert getattr(model, "predict_lone", None) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lone_row_threads", "2"),
        ("lone_row_threads", -1),
        ("lone_row_threads", True),
        ("lone_row_threads", 5000),
        ("intra_op_threads", 0),
        ("intra_op_threads", 1.5),
    ],
)
def test_bad_thread_options_are_refused(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"options.{key} must be a whole number"):
        _load(write_mlp_onnx(tmp_path / "mlp.onnx", width=16), **{key: value})
