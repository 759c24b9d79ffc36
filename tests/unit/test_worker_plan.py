"""``server.workers: auto``: how many HTTP processes, and the reason given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelport.bootstrap import AUTO_MAX_MODEL_BYTES, AUTO_MAX_WORKERS, build, plan_workers
from modelport.settings import load_settings


def _plan(tmp_path: Path, flags: dict[str, Any], cores: int, artifact_bytes: int = 1000) -> Any:
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(b"\0" * artifact_bytes)
    settings = load_settings({"data_dir": tmp_path / "data", "models": [artifact], **flags}, env={})
    return plan_workers(settings, build(settings).registry, cores=cores)


@pytest.mark.parametrize(
    ("flags", "cores", "count", "reason"),
    [
        ({}, 1, 1, "one usable core"),
        ({}, 2, 2, "one per usable core"),
        ({}, 64, AUTO_MAX_WORKERS, "one per usable core"),
        ({"server": {"workers": 3}}, 1, 3, "as configured"),
        ({"auth": {"modes": "keys"}}, 4, 1, "per process"),
        ({"auth": {"modes": "keys"}, "state": {"redis_url": "redis://127.0.0.1"}}, 4, 4, "core"),
        ({"limits": {"anonymous_rate": "10/s"}}, 4, 1, "per process"),
        ({"limits": {"default_quota": "100/day"}}, 4, 1, "per process"),
        ({"state": {"url": "memory:"}}, 4, 1, "memory"),
    ],
    ids=[
        "1-core",
        "2-cores",
        "capped",
        "explicit",
        "auth-local",
        "auth-redis",
        "rate",
        "quota",
        "memory-state",
    ],
)
def test_plan(tmp_path: Path, flags: dict[str, Any], cores: int, count: int, reason: str) -> None:
    plan = _plan(tmp_path, flags, cores)
    assert plan.count == count
    assert reason in plan.reason


def test_large_models_stay_in_one_process(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {}, cores=4, artifact_bytes=AUTO_MAX_MODEL_BYTES + 1)
    assert plan.count == 1
    assert "MiB" in plan.reason


def test_onnx_weights_in_external_files_count_toward_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ONNX file can keep its weights in files beside it: each worker would load
    those too, so the files it names count, though the .onnx file itself is tiny."""
    import onnx

    from modelport import bootstrap
    from tests.conftest import write_mlp_onnx

    folder = tmp_path / "ext"
    folder.mkdir()
    model = onnx.load(write_mlp_onnx(tmp_path / "inline.onnx"))
    artifact = folder / "m.onnx"
    onnx.save(model, artifact, save_as_external_data=True, location="m.data", size_threshold=0)
    data = (folder / "m.data").stat().st_size
    assert artifact.stat().st_size < 10_000 < data

    def plan(limit: int) -> Any:
        monkeypatch.setattr(bootstrap, "AUTO_MAX_MODEL_BYTES", limit)
        settings = load_settings({"data_dir": tmp_path / "data", "models": [artifact]}, env={})
        return plan_workers(settings, build(settings).registry, cores=4)

    assert plan(data // 2).count == 1
    assert "MiB" in plan(data // 2).reason
    # the data file counts once, though three tensors name it; other files do not
    (folder / "unrelated.bin").write_bytes(b"\0" * data * 4)
    assert plan(data * 2).count == 4


def test_process_isolation_stays_in_one_process(tmp_path: Path) -> None:
    repo = tmp_path / "repo" / "m"
    (repo / "1").mkdir(parents=True)
    (repo / "1" / "model.onnx").write_bytes(b"\0")
    (repo / "model.yaml").write_text("isolation: process\n")
    settings = load_settings({"data_dir": tmp_path / "data", "repository": repo.parent}, env={})
    plan = plan_workers(settings, build(settings).registry, cores=4)
    assert plan.count == 1
    assert "isolation" in plan.reason


@pytest.mark.parametrize("value", ["0", "65", "many", "-1"])
def test_bad_worker_counts_are_refused(value: str) -> None:
    with pytest.raises(Exception, match="workers must be a number from 1 to 64, or 'auto'"):
        load_settings({"server": {"workers": value}}, env={})


def test_runtime_threads_split_the_cores_between_workers(tmp_path: Path) -> None:
    """N workers x runtime threads = cores, unless executors.runtime_threads says otherwise."""
    from modelport.bootstrap import usable_cores

    two = load_settings({"data_dir": tmp_path, "server": {"workers": 2}}, env={})
    assert build(two).registry._runtime_threads == max(1, usable_cores() // 2)
    pinned = load_settings(
        {"data_dir": tmp_path, "server": {"workers": 2}, "executors": {"runtime_threads": 3}},
        env={},
    )
    assert build(pinned).registry._runtime_threads == 3


def _relu_onnx(tmp_path: Path) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "relu.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def _loaded(registry: Any) -> Any:
    """Load every model, return relu's executor, close the registry."""
    import asyncio

    async def main() -> Any:
        await registry.load_all()
        executor = registry.resolve("relu").executor
        await registry.close()
        return executor

    return asyncio.run(main())


def test_the_registry_hands_its_thread_budget_to_onnxruntime(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "data_dir": tmp_path / "d",
            "models": [_relu_onnx(tmp_path)],
            "executors": {"runtime_threads": 1},
        },
        env={},
    )
    executor = _loaded(build(settings).registry)
    assert executor.model._session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(
    ("lend", "max_bytes", "with_board", "lone_threads"),
    [
        (True, 64 << 20, True, 2),  # two workers on two cores: a lone row may use both
        (False, 64 << 20, True, None),  # executors.lend_idle_cores: false
        (True, 10, True, None),  # a model file over the size for a second session
        (True, 64 << 20, False, None),  # no shared board (a single process, or none made)
    ],
)
def test_several_workers_lend_their_idle_cores_to_a_lone_row(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lend: bool,
    max_bytes: int,
    with_board: bool,
    lone_threads: int | None,
) -> None:
    import modelport.bootstrap
    import modelport.core.registry
    from modelport.core.busy import BusyBoard, make_board

    monkeypatch.setattr(modelport.bootstrap, "usable_cores", lambda: 2)
    monkeypatch.setattr(modelport.core.registry, "LONE_MAX_BYTES", max_bytes)
    make_board(tmp_path, 2)
    board = BusyBoard.open(tmp_path, 0) if with_board else None
    settings = load_settings(
        {
            "data_dir": tmp_path / "d",
            "models": [_relu_onnx(tmp_path)],
            "server": {"workers": 2},
            "executors": {"lend_idle_cores": lend},
        },
        env={},
    )
    executor = _loaded(build(settings, board=board).registry)
    assert executor.model._session.get_session_options().intra_op_num_threads == 1
    lone = executor.model._lone_session
    assert (lone and lone.get_session_options().intra_op_num_threads) == lone_threads
    # every model marks the board, so a lone row never borrows a core another model uses
    assert (executor._board is not None) == (lend and with_board)


@pytest.mark.parametrize("value", [0, 257, "many"])
def test_bad_runtime_thread_counts_are_refused(value: Any) -> None:
    with pytest.raises(Exception, match="runtime_threads"):
        load_settings({"executors": {"runtime_threads": value}}, env={})


@pytest.mark.parametrize("value", ["sometimes", 2, [True]])
def test_lend_idle_cores_takes_only_a_yes_or_no(value: Any) -> None:
    with pytest.raises(Exception, match="lend_idle_cores"):
        load_settings({"executors": {"lend_idle_cores": value}}, env={})
    env = {"MODELPORT_EXECUTORS__LEND_IDLE_CORES": "false"}
    assert load_settings({}, env=env).executors.lend_idle_cores is False


def test_no_lone_row_session_where_nothing_would_pick_it(tmp_path: Path) -> None:
    """model.yaml may ask for ``lone_row_threads``; in a single process (no board) it would
    be a second copy of the weights that never runs, so the registry does not build it."""
    repo = tmp_path / "repo" / "relu"
    (repo / "1").mkdir(parents=True)
    _relu_onnx(tmp_path).rename(repo / "1" / "model.onnx")
    (repo / "model.yaml").write_text("options: {intra_op_threads: 1, lone_row_threads: 2}\n")
    settings = load_settings({"data_dir": tmp_path / "d", "repository": tmp_path / "repo"}, env={})
    executor = _loaded(build(settings).registry)
    assert executor.model._session.get_session_options().intra_op_num_threads == 1
    assert executor.model.predict_lone is None
