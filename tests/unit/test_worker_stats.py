"""Batch statistics shared between HTTP workers through a directory (observe/worker_stats.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from modelport.core.batching import BatchStats
from modelport.observe.worker_stats import StatsBoard, snapshot_of
from modelport.testing import FakeModel, build_test_services


def _stats(**counts: float) -> BatchStats:
    return BatchStats(**counts)  # type: ignore[arg-type]


def test_combine_adds_counts_and_keeps_the_largest_batch() -> None:
    a = _stats(
        batches=2,
        rows=10,
        requests=6,
        max_batch_rows=8,
        queue_wait_s_total=0.5,
        dropped_deadline=1,
        dropped_cancelled=2,
        rejected_overload=3,
        failed_batches=1,
    )
    b = _stats(
        batches=3,
        rows=5,
        requests=5,
        max_batch_rows=3,
        queue_wait_s_total=0.25,
        dropped_deadline=1,
        dropped_cancelled=0,
        rejected_overload=1,
        failed_batches=0,
    )
    total = BatchStats.combine([a, b])
    assert asdict(total) == {
        "batches": 5,
        "rows": 15,
        "requests": 11,
        "max_batch_rows": 8,
        "queue_wait_s_total": 0.75,
        "dropped_deadline": 2,
        "dropped_cancelled": 2,
        "rejected_overload": 4,
        "failed_batches": 1,
    }
    assert total.to_dict()["mean_batch_rows"] == 3.0
    assert BatchStats.combine([]) == BatchStats()


def test_a_worker_sees_its_siblings_counters_beside_its_own(tmp_path: Path) -> None:
    first, second = StatsBoard(tmp_path, 0), StatsBoard(tmp_path, 1)
    assert first.publish({"iris/1": asdict(_stats(batches=4, rows=40, requests=40))})
    mine = _stats(batches=1, rows=2, requests=2, max_batch_rows=2)
    total, workers = second.combined("iris", "1", mine)
    assert (total.batches, total.rows, total.requests, workers) == (5, 42, 42, 2)
    # its own file is never counted twice, and other versions stay apart
    second.publish({"iris/1": asdict(mine)})
    assert first.combined("iris", "1", _stats(batches=4, rows=40))[0].batches == 5
    assert second.combined("iris", "2", BatchStats()) == (BatchStats(), 1)  # none there


def test_publish_writes_only_changes_and_replaces_whole_files(tmp_path: Path) -> None:
    board = StatsBoard(tmp_path, 3)
    snap = {"m/1": asdict(_stats(batches=1))}
    assert board.publish(snap) is True
    assert board.publish(dict(snap)) is False  # unchanged: no write
    assert json.loads((tmp_path / "worker-3.json").read_text()) == snap
    assert [p.name for p in tmp_path.iterdir()] == ["worker-3.json"]  # no temp file left


def test_unreadable_or_foreign_snapshots_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "worker-1.json").write_text("{not json")
    (tmp_path / "worker-2.json").write_text(json.dumps({"m/1": {"batches": 7, "bogus": 1}}))
    total, workers = StatsBoard(tmp_path, 0).combined("m", "1", _stats(batches=1))
    assert (total.batches, workers) == (8, 2)  # the broken file is left out, unknown keys too


def test_the_board_publishes_at_start_on_a_timer_and_at_stop(tmp_path: Path) -> None:
    services = build_test_services({"m": FakeModel()}, data_dir=tmp_path / "data")
    board_dir = tmp_path / "board"
    board_dir.mkdir()

    async def scenario() -> list[dict[str, object]]:
        await services.registry.load_all()
        board = StatsBoard(board_dir, 0, interval_s=0.02)
        seen = []
        board.start(lambda: snapshot_of(services.registry))
        seen.append(json.loads((board_dir / "worker-0.json").read_text()))
        await services.service.predict("m", None, {"x": np.ones((1, 3), np.float32)})
        await asyncio.sleep(0.1)
        seen.append(json.loads((board_dir / "worker-0.json").read_text()))
        await board.stop(lambda: snapshot_of(services.registry))
        await services.registry.close()
        return seen

    before, after = asyncio.run(scenario())
    assert before["m/1"]["requests"] == 0
    assert after["m/1"]["requests"] == 1 and after["m/1"]["batches"] == 1
