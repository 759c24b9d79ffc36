"""The workers' shared busy board, the executors that mark it and pick a lone-row predict,
and the onnxruntime lone-row session they pick."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.clock import ManualClock
from modelport.core.batching import BatchStats
from modelport.core.busy import BOARD_FILE, QUIET_NS, BusyBoard, make_board
from modelport.core.discovery import RuntimeTable
from modelport.core.executors import (
    Executor,
    InlineExecutor,
    ThreadExecutor,
    choose_executor,
)
from modelport.core.registry import Registry
from modelport.core.repository import ModelSource, VersionSource
from modelport.core.runtime import BaseLoadedModel, Isolation, ModelConfig
from modelport.core.signature import NamedArrays, Signature, TensorSpec
from modelport.errors import ConfigError, InvalidInput
from modelport.settings import BatchingSettings, ExecutorSettings
from tests.conftest import registry_for, write_mlp_onnx


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
    views = BusyBoard(tmp_path / BOARD_FILE, 0, clock), BusyBoard(tmp_path / BOARD_FILE, 1, clock)
    clock.ns += QUIET_NS + 1  # both have loaded their models and wait for work
    return views


def test_a_worker_is_quiet_only_when_out_of_a_batch_for_a_while(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock
) -> None:
    mine, theirs = boards
    assert mine.others_quiet() and theirs.others_quiet()  # nobody has served since start
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
    assert mine.lendable()
    mine.enter()  # this worker is running a batch of its own (another model, a 2nd slot)
    assert mine.others_quiet() and not mine.lendable()
    mine.leave()
    assert mine.lendable()


def test_a_restarted_worker_clears_what_its_predecessor_left(
    tmp_path: Path, clock: FakeClock
) -> None:
    make_board(tmp_path, 2)
    dead = BusyBoard(tmp_path / BOARD_FILE, 1, clock)
    dead.enter()  # and the process dies mid-batch
    other = BusyBoard(tmp_path / BOARD_FILE, 0, clock)
    assert not other.others_quiet()
    clock.ns += 100 * QUIET_NS
    assert not other.others_quiet()  # a dead worker's batch never ends
    BusyBoard(tmp_path / BOARD_FILE, 1, clock)  # the supervisor starts worker 1 again
    assert not other.others_quiet()  # loading its models is work too
    clock.ns += QUIET_NS + 1
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


class Model(BaseLoadedModel):
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


class Slow(Model):
    """Computes until ``release`` is set (at most 5 s)."""

    def __init__(self, release: threading.Event, fail: bool = False) -> None:
        super().__init__(fail=fail)
        self._release = release

    def predict(self, batch: NamedArrays) -> NamedArrays:
        self._release.wait(5)
        return self._record("predict", batch)


def _rows(n: int) -> NamedArrays:
    return {"x": np.arange(n, dtype=np.float64).reshape(n, 1)}


@pytest.mark.parametrize("kind", ["inline", "thread"])
def test_one_row_borrows_cores_only_while_the_others_are_quiet(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock, kind: str
) -> None:
    mine, theirs = boards
    model = LoneModel(watcher=theirs)
    executor = choose_executor(model, kind, 1, "m", board=mine)
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


class Refusing(LoneModel):
    """Refuses (422) any batch holding a row of -1, without saying which row."""

    signature = Signature(
        inputs=(TensorSpec("x", "float64", (-1, 1)),),
        outputs=(TensorSpec("y", "float64", (-1, 1)),),
    )

    def _record(self, kind: str, batch: NamedArrays) -> NamedArrays:
        out = super()._record(kind, batch)
        if (batch["x"] == -1).any():
            raise InvalidInput("a row of -1")
        return out


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_lone_row_batches_counts_formed_batches_not_a_split_batch_s_parts(
    boards: tuple[BusyBoard, BusyBoard], mode: str
) -> None:
    """A batch the model refuses for one request's data runs again in halves, down to
    one-row parts that borrow cores like any lone row; they are not lone-row batches."""
    mine, _ = boards
    model = Refusing()
    registry = Registry(
        RuntimeTable.discover(),
        BatchingSettings(),
        ExecutorSettings(mode=mode),
        ManualClock(),
        board=mine,
    )
    registry.add_object("m", model)

    async def main() -> None:
        await registry.load_all()
        model.calls.clear()  # its warm-up
        batcher = registry.resolve("m").batcher
        assert batcher is not None
        row = {"x": np.ones((1, 1))}
        hostile = {"x": -np.ones((1, 1))}
        # queued together, so that they form one batch of two rows
        pair = [batcher.enqueue(row, 1), batcher.enqueue(hostile, 1)]
        done = await asyncio.gather(*pair, return_exceptions=True)
        assert isinstance(done[1], InvalidInput) and not isinstance(done[0], BaseException)
        await batcher.submit(row, 1)  # formed with one row
        await registry.close()

    asyncio.run(main())
    assert [(kind, rows) for kind, rows, _ in model.calls] == [
        ("predict", 2),  # refused, then its halves, each borrowing cores
        ("lone", 1),
        ("lone", 1),
        ("lone", 1),  # a lone request
    ]
    batcher = registry.get("m").versions["1"].batcher
    assert batcher is not None
    stats = batcher.stats
    assert stats.lone_row_batches == 1
    assert (stats.batches, stats.split_batches) == (2, 1)


def test_a_failed_batch_does_not_leave_the_worker_marked_busy(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock
) -> None:
    mine, theirs = boards
    executor = InlineExecutor(LoneModel(fail=True), mine)
    executor.stats = BatchStats()
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(executor.run(_rows(1)))
    assert executor.stats.lone_row_batches == 0  # counted only when it answered
    clock.ns += QUIET_NS + 1
    assert theirs.others_quiet()


@pytest.mark.parametrize("fail", [False, True])
def test_a_cancelled_caller_leaves_the_worker_busy_until_its_thread_ends(
    boards: tuple[BusyBoard, BusyBoard],
    clock: FakeClock,
    fail: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cancelling the wait (shutdown) does not stop the thread: the board must not call
    this worker quiet, and lend its core, while the thread still computes."""
    mine, theirs = boards
    release = threading.Event()
    model = Slow(release, fail=fail)
    executor = ThreadExecutor(model, 1, board=mine)

    async def main() -> None:
        task = asyncio.ensure_future(executor.run(_rows(2)))
        await asyncio.sleep(0.05)  # the thread has the batch
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        clock.ns += 10 * QUIET_NS
        assert not theirs.others_quiet()  # the thread is still computing
        release.set()
        for _ in range(200):  # the thread ends; the board hears of it on the loop
            if theirs.others_quiet():
                break
            await asyncio.sleep(0.01)
            clock.ns += QUIET_NS + 1
        assert theirs.others_quiet()
        await executor.close()

    try:
        asyncio.run(main())
    finally:
        release.set()
    assert [kind for kind, _, _ in model.calls] == ["predict"]
    gc.collect()  # a failure nobody waited for must not be reported as unretrieved
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_a_cancelled_batch_still_queued_for_the_thread_never_runs(
    boards: tuple[BusyBoard, BusyBoard], clock: FakeClock
) -> None:
    mine, theirs = boards
    release = threading.Event()
    model = Slow(release)
    executor = ThreadExecutor(model, 1, board=mine)

    async def main() -> None:
        first = asyncio.ensure_future(executor.run(_rows(1)))
        queued = asyncio.ensure_future(executor.run(_rows(3)))
        await asyncio.sleep(0.05)  # the one thread holds the first batch
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        assert (await first)["y"].tolist() == [[0.0]]
        await asyncio.sleep(0.01)  # the withdrawn batch's leave runs on the loop
        clock.ns += QUIET_NS + 1
        assert theirs.others_quiet()  # both batches left the board
        await executor.close()

    try:
        asyncio.run(main())
    finally:
        release.set()
    assert [rows for _, rows, _ in model.calls] == [1]


def test_the_registry_hands_its_board_to_the_process_executor(
    tmp_path: Path, boards: tuple[BusyBoard, BusyBoard]
) -> None:
    """So that a process-isolated model's batches mark this worker busy too
    (tests/unit/core/test_process_executor.py has the executor's side)."""
    mine, _ = boards
    path = write_mlp_onnx(tmp_path / "mlp.onnx")
    source = ModelSource(
        "mlp", ModelConfig(isolation=Isolation.PROCESS), (VersionSource("1", path),)
    )
    given: list[BusyBoard | None] = []

    async def in_process(
        runtime: str, artifact: Path, config: ModelConfig, board: BusyBoard | None = None
    ) -> tuple[Signature, Executor]:  # what the process factory hands back, minus processes
        given.append(board)
        loaded = RuntimeTable.discover().get(runtime).load(artifact, config)
        return loaded.signature, InlineExecutor(loaded)

    async def load_with(board: BusyBoard | None) -> None:
        registry = registry_for([source], process_factory=in_process, board=board)
        await registry.load_all()
        assert registry.all_ready()
        await registry.close()

    asyncio.run(load_with(mine))
    asyncio.run(load_with(None))
    assert given == [mine, None]


def test_only_a_runtime_model_offers_a_lone_predict(boards: tuple[BusyBoard, BusyBoard]) -> None:
    """An arbitrary object served with ``add_object`` may have any attribute; only a
    runtime's model class (``BaseLoadedModel``) is trusted to mean it."""
    mine, _ = boards

    class Foreign:
        calls: list[str] = []

        def predict(self, batch: NamedArrays) -> NamedArrays:
            self.calls.append("predict")
            return batch

        def predict_lone(self, batch: NamedArrays) -> NamedArrays:
            self.calls.append("lone")
            return batch

    foreign = Foreign()
    asyncio.run(InlineExecutor(foreign, mine).run(_rows(1)))  # type: ignore[arg-type]
    assert foreign.calls == ["predict"]


def test_without_a_board_or_a_lone_predict_every_batch_runs_as_before(
    boards: tuple[BusyBoard, BusyBoard],
) -> None:
    mine, theirs = boards
    unboarded = LoneModel()
    asyncio.run(InlineExecutor(unboarded).run(_rows(1)))
    plain = Model(watcher=theirs)
    asyncio.run(InlineExecutor(plain, mine).run(_rows(1)))
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
    assert model.predict_lone is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lone_row_threads", -1),
        ("lone_row_threads", True),
        ("lone_row_threads", "two"),
        ("intra_op_threads", 1.5),
        ("intra_op_threads", "2.5"),
        ("intra_op_threads", [2]),
    ],
)
def test_bad_thread_options_are_refused(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"options.{key} must be a whole number of threads"):
        _load(write_mlp_onnx(tmp_path / "mlp.onnx", width=16), **{key: value})


@pytest.mark.parametrize(("value", "threads"), [(0, 2), ("3", 3), (4.0, 4), (1, 1)])
def test_thread_options_read_as_before(tmp_path: Path, value: Any, threads: int) -> None:
    """0 means the default (every usable core, as onnxruntime reads 0); whole numbers
    written as text or as floats still load, as they did before the options were checked."""
    import os

    cores = len(os.sched_getaffinity(0))
    model = _load(write_mlp_onnx(tmp_path / "mlp.onnx", width=16), intra_op_threads=value)
    expected = cores if value == 0 else threads
    assert model._session.get_session_options().intra_op_num_threads == expected


def _forest_onnx(path: Path) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=120, random_state=0).fit(x, y)
    onnx_model = to_onnx(forest, x[:1].astype(np.float32), options={"zipmap": False})
    path.write_bytes(onnx_model.SerializeToString())
    return path


def _external_onnx(path: Path) -> Path:
    import onnx

    model = onnx.load(write_mlp_onnx(path.with_suffix(".inline.onnx")))
    onnx.save(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0,
    )
    return path


def _noisy_onnx(path: Path) -> Path:
    """y = x + uniform noise: a graph whose answers differ from run to run."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("RandomUniformLike", ["x"], ["noise"]),
            helper.make_node("Add", ["x", "noise"], ["y"]),
        ],
        "noisy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_forest_onnx, "it uses ai.onnx.ml operators"),
        (_external_onnx, "its weights are in external files"),
        (_noisy_onnx, "its answers on more threads differ on a probe row"),
    ],
)
def test_no_lone_row_session_where_answers_could_differ(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, build: Any, reason: str
) -> None:
    """Tree ensembles sum per-thread parts in the order threads finish; external weights
    escape the size limit; and any graph whose probe rows do not repeat bit for bit."""
    path = build(tmp_path / "model.onnx")
    with caplog.at_level(logging.INFO):
        model = _load(path, intra_op_threads=1, lone_row_threads=2)
    assert model.predict_lone is None
    assert f"no lone-row session: {reason}" in caplog.text
    row = _probe(model)
    assert model.predict(row).keys()  # the model itself still serves


def _probe(model: Any) -> NamedArrays:
    spec = model.signature.inputs[0]
    width = spec.row_shape[0] if spec.row_shape else 1
    return {spec.name: np.ones((1, width), dtype=spec.np_dtype)}
