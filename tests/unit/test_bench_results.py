"""The benchmark harness: its derived numbers (benchmarks/results.py: which (a) rounds a
block's L_model comes from, M2's combined bound built on it) and the order in which
benchmarks/run.py measures."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "results.py"


@pytest.fixture(scope="module")
def results() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("bench_results", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_results"] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["bench_results"]


def _inproc(results: ModuleType, round_: int, rates: dict[int, float]) -> list[object]:
    return [
        results.InprocRow("pinned", "m2", batch, rate, batch / rate * 1e6, round=round_)
        for batch, rate in rates.items()
    ]


def _http(results: ModuleType, server: str, conns: int, block: int, rps: float) -> object:
    return results.HttpRow("pinned", "m2", server, conns, rps=rps, block=block)


def test_a_blocks_l_model_is_the_mean_of_the_rounds_around_it(results: ModuleType) -> None:
    inproc = [
        *_inproc(results, 0, {8: 9_000.0, 128: 10_000.0}),  # before block 0 (1 conn)
        *_inproc(results, 1, {8: 11_000.0, 128: 12_000.0}),  # between blocks 0 and 1
        *_inproc(results, 2, {8: 20_000.0, 128: 14_000.0}),  # after block 1 (64 conns)
    ]
    http = [
        _http(results, "modelport", 1, 0, 1_000.0),
        _http(results, "modelport", 64, 1, 6_000.0),
        _http(results, "noop-modelport", 64, 1, 48_000.0),
    ]
    res = results.Results(http, inproc)
    # each round's best batch size, then the two rounds around the block
    assert res.l_model("pinned", "m2", 1) == pytest.approx((10_000 + 12_000) / 2)
    assert res.l_model("pinned", "m2", 64) == pytest.approx((12_000 + 20_000) / 2)
    assert res.inproc_best("pinned", "m2") == pytest.approx((10_000 + 12_000 + 20_000) / 3)
    assert res.ratios("pinned", "m2", 64)["modelport/(a)"] == pytest.approx(6_000 / 16_000)

    bound = 1 / (1 / 16_000 + 1 / 48_000)
    (_, combined) = results._throughput_targets(res, "m2", 64)
    assert combined.measured == format(6_000 / bound, ".0%")
    assert combined.passed is (6_000 / bound >= 0.60)


def test_a_missing_round_leaves_the_other_and_a_failed_one_is_not_averaged_in(
    results: ModuleType,
) -> None:
    inproc = [
        *_inproc(results, 0, {128: 10_000.0}),
        results.InprocRow("pinned", "m2", 0, error="crashed", round=1),
    ]
    res = results.Results([_http(results, "modelport", 64, 0, 5_000.0)], inproc)
    assert res.l_model("pinned", "m2", 64) == pytest.approx(10_000.0)
    assert res.l_model("pinned", "m1", 64) is None
    # neither round around a block has a figure (round 1 failed, round 2 never ran):
    # the run's other rounds stand in
    res = results.Results([_http(results, "modelport", 64, 1, 5_000.0)], inproc)
    assert res.l_model("pinned", "m2", 64) == pytest.approx(10_000.0)


@pytest.fixture()
def run_module(results: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/run.py, importable with its sibling modules (it is a script)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_run", BENCH.parent / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", module)
    spec.loader.exec_module(module)
    return module


def test_the_modes_of_one_block_run_back_to_back_and_alternate_which_goes_first(
    run_module: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The unpinned / pinned ratio compares two HTTP runs: they must be neighbours in
    time, not half a run apart, and (a) must still bracket every block in both modes."""
    calls: list[tuple[object, ...]] = []

    def fake_http(mode: str, model: object, name: str, conns: int, cfg: object) -> object:
        calls.append(("http", mode, name, conns))
        return run_module.HttpRow(mode, "m1", name, conns, error="not run")

    def fake_round(res: object, mode: str, model: object, cfg: object, round_: int) -> None:
        calls.append(("a", mode, round_))

    monkeypatch.setattr(run_module, "run_http", fake_http)
    monkeypatch.setattr(run_module, "_inproc_round", fake_round)
    cfg = run_module.parse_args(
        [
            "--models",
            "m1",
            "--connections",
            "1,64",
            "--servers",
            "fastapi,modelport",
            "--work",
            str(tmp_path),
            "--out",
            "none",
        ]
    )
    res = run_module.measure_all(cfg, {"m1": object()})

    assert calls == [
        ("a", "pinned", 0), ("a", "unpinned", 0),
        ("http", "pinned", "fastapi", 1), ("http", "pinned", "modelport", 1),
        ("http", "unpinned", "fastapi", 1), ("http", "unpinned", "modelport", 1),
        ("a", "pinned", 1), ("a", "unpinned", 1),
        ("http", "unpinned", "modelport", 64), ("http", "unpinned", "fastapi", 64),
        ("http", "pinned", "modelport", 64), ("http", "pinned", "fastapi", 64),
        ("a", "pinned", 2), ("a", "unpinned", 2),
    ]  # fmt: skip
    assert [r.block for r in res.http] == [0, 0, 0, 0, 1, 1, 1, 1]

    # every server leads once in each mode over as many blocks as there are servers
    calls.clear()
    cfg = run_module.parse_args(
        ["--models", "m1", "--connections", "1,16,64", "--servers", "noop",
         "--work", str(tmp_path), "--out", "none"]
    )  # fmt: skip
    run_module.measure_all(cfg, {"m1": object()})
    for mode in ("pinned", "unpinned"):
        runs = [c for c in calls if c[0] == "http" and c[1] == mode]
        assert len({runs[k][2] for k in (0, 3, 6)}) == 3, runs


@pytest.fixture()
def placement(results: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/placement.py, importable with its sibling modules."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    path = BENCH.parent / "placement.py"
    spec = importlib.util.spec_from_file_location("bench_placement", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_placement", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "pinned,sideways"], "--configs: choose from pinned, unpinned, unpinned-"),
        (["--configs", ","], "--configs: choose from"),
        (["--rounds", "0"], "--rounds and --seconds must be at least 1"),
        (["--seconds", "0.5"], "--rounds and --seconds must be at least 1"),
    ],
)
def test_placement_refuses_an_unknown_configuration_or_nothing_to_measure(
    placement: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        placement.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _fake_points(
    placement: ModuleType, monkeypatch: pytest.MonkeyPatch, rates: list[object]
) -> list[str]:
    """Stub the server runs: each call returns the next rate (a str: a failed point)."""
    monkeypatch.setattr(placement.models, "build", lambda keys: {k: object() for k in keys})
    supply = iter(rates)
    order: list[str] = []

    def fake_measure(name: str, files: object, extra: list[str], seconds: float) -> object:
        order.append(name)
        rate = next(supply)
        if isinstance(rate, str):
            return placement.Point(name, failed=rate)
        return placement.Point(name, rate, 33.0, 6.0, 0.5, 0.4, 0)

    monkeypatch.setattr(placement, "measure", fake_measure)
    return order


def test_placement_rotates_the_configurations_and_compares_medians_with_pinned(
    placement: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # calls: (pinned, unpinned), (unpinned, pinned), (pinned, unpinned)
    order = _fake_points(placement, monkeypatch, [30_000, 42_000, 45_000, 29_000, 31_000, 36_000])
    assert placement.main(["--configs", "pinned,unpinned", "--rounds", "3"]) == 0
    assert order == ["pinned", "unpinned", "unpinned", "pinned", "pinned", "unpinned"]
    out = capsys.readouterr().out
    assert "| 2 | unpinned | 45,000 | 33.0 | 0.500 | 6.0 | 0.400 | 0 |  |" in out
    assert "| pinned | 3 | 30,000 | 1.00 |" in out  # median of 30k, 29k, 31k
    assert "| unpinned | 3 | 42,000 | 1.40 |" in out  # median of 42k, 45k, 36k


def test_a_failed_point_is_shown_and_left_out_of_the_medians(
    placement: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_points(placement, monkeypatch, [30_000, "ServerError: exited with 1", 40_000, 20_000])
    assert placement.main(["--configs", "pinned,unpinned", "--rounds", "2"]) == 1
    out = capsys.readouterr().out
    assert "| 1 | unpinned | - | - | - | - | - | - | ServerError: exited with 1 |" in out
    assert "| unpinned | 1 | 40,000 | 1.60 |" in out  # pinned: median of 30k and 20k


def test_involuntary_switches_add_up_every_thread_of_the_processes(
    placement: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every thread counts, not only each process's main one (what /proc/PID/status
    shows); a process or thread gone meanwhile adds nothing."""
    for pid, tid, switches in [(10, 10, 5), (10, 11, 7), (20, 20, 100)]:
        task = tmp_path / str(pid) / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "status").write_text(
            f"Name:\tpython\nvoluntary_ctxt_switches:\t999\n"
            f"nonvoluntary_ctxt_switches:\t{switches}\n"
        )
    (tmp_path / "20" / "task" / "21").mkdir()  # a thread that ended: no status left
    monkeypatch.setattr(placement.pinning, "PROC", tmp_path)
    assert placement.involuntary_switches([10]) == 12
    assert placement.involuntary_switches([10, 20, 30]) == 112
