"""Batch statistics shared between HTTP workers through a directory (observe/worker_stats.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.cli import _workers
from modelport.core.batching import BatchStats
from modelport.observe.worker_stats import StatsBoard, combined, snapshot_of
from modelport.testing import FakeModel, build_test_services


def test_combine_adds_counts_and_keeps_the_largest_batch() -> None:
    # batches, rows, requests, max_batch_rows, queue_wait_s_total, the four drop counts,
    # lone_row_batches
    a = BatchStats(2, 10, 6, 8, 0.5, 1, 2, 3, 1, 1)
    b = BatchStats(3, 5, 5, 3, 0.25, 1, 0, 1, 0, 2)
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
        "lone_row_batches": 3,
        "split_batches": 0,
    }
    assert total.to_dict()["mean_batch_rows"] == 3.0
    assert BatchStats.combine([]) == BatchStats()


def test_a_worker_sees_its_siblings_counters_beside_its_own(tmp_path: Path) -> None:
    first, second = StatsBoard(tmp_path, 0), StatsBoard(tmp_path, 1)
    assert first.publish({"iris/1": asdict(BatchStats(batches=4, rows=40, requests=40))})
    mine = BatchStats(batches=1, rows=2, requests=2, max_batch_rows=2)
    total, workers = combined(second.siblings(), "iris", "1", mine)
    assert (total.batches, total.rows, total.requests, workers) == (5, 42, 42, 2)
    # its own file is never counted twice, and other versions stay apart
    second.publish({"iris/1": asdict(mine)})
    assert combined(first.siblings(), "iris", "1", BatchStats(batches=4))[0].batches == 5
    assert combined(second.siblings(), "iris", "2", BatchStats()) == (BatchStats(), 1)


def test_publish_writes_only_changes_and_replaces_whole_files(tmp_path: Path) -> None:
    board = StatsBoard(tmp_path, 3)
    snap = {"m/1": asdict(BatchStats(batches=1))}
    assert board.publish(snap) is True
    assert board.publish(dict(snap)) is False  # unchanged: no write
    assert json.loads((tmp_path / "worker-3.json").read_text()) == snap
    assert [p.name for p in tmp_path.iterdir()] == ["worker-3.json"]  # no temp file left


def test_unreadable_or_foreign_snapshots_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "worker-1.json").write_text("{not json")
    (tmp_path / "worker-2.json").write_text(json.dumps({"m/1": {"batches": 7, "bogus": 1}}))
    (tmp_path / "worker-4.json").write_text("[1, 2]")
    total, workers = combined(StatsBoard(tmp_path, 0).siblings(), "m", "1", BatchStats(batches=1))
    assert (total.batches, workers) == (8, 2)  # broken files are left out, unknown keys too


def test_a_removed_directory_is_made_again(tmp_path: Path) -> None:
    shared = tmp_path / "board"
    board = StatsBoard(shared, 0)  # e.g. RemoveIPC emptied /dev/shm under a running server
    assert board.publish({"m/1": asdict(BatchStats(batches=2))})
    assert json.loads((shared / "worker-0.json").read_text())["m/1"]["batches"] == 2
    assert StatsBoard(tmp_path / "gone", 1).siblings() == []


def _served(tmp_path: Path) -> Any:
    return build_test_services({"m": FakeModel()}, data_dir=tmp_path / "data")


def _read(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "worker-0.json").read_text())  # type: ignore[no-any-return]


def test_the_board_replaces_a_predecessors_file_at_start_and_writes_at_stop(
    tmp_path: Path,
) -> None:
    services, shared = _served(tmp_path), tmp_path / "board"
    shared.mkdir()
    (shared / "worker-0.json").write_text(json.dumps({"m/1": {"requests": 99}}))  # the dead one

    async def scenario() -> list[dict[str, Any]]:
        await services.registry.load_all()
        board = StatsBoard(shared, 0, interval_s=3600)  # the timer never fires here
        board.start(lambda: snapshot_of(services.registry))
        seen = [_read(shared)]
        await services.service.predict("m", None, {"x": np.ones((1, 3), np.float32)})
        seen.append(_read(shared))
        await board.stop()
        seen.append(_read(shared))
        await services.registry.close()
        return seen

    at_start, before_stop, at_stop = asyncio.run(scenario())
    assert at_start["m/1"]["requests"] == 0
    assert before_stop["m/1"]["requests"] == 0
    assert at_stop["m/1"]["requests"] == 1 and at_stop["m/1"]["batches"] == 1


def test_the_timer_publishes_and_survives_a_failing_collect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    services, shared = _served(tmp_path), tmp_path / "board"
    shared.mkdir()
    calls = 0

    def flaky() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            raise RuntimeError("boom")
        return snapshot_of(services.registry)

    async def scenario() -> dict[str, Any]:
        await services.registry.load_all()
        board = StatsBoard(shared, 0, interval_s=0.01)
        board.start(flaky)
        await services.service.predict("m", None, {"x": np.ones((1, 3), np.float32)})
        while calls < 6:
            await asyncio.sleep(0.01)
        await board.stop()  # does not raise
        await services.registry.close()
        return _read(shared)

    with caplog.at_level(logging.ERROR, logger="modelport.workers"):
        assert asyncio.run(scenario())["m/1"]["requests"] == 1
    assert caplog.text.count("cannot publish batch statistics") == 1  # logged once


def test_the_supervisor_clears_directories_of_killed_supervisors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_workers, "Path", lambda p: tmp_path if p == "/dev/shm" else Path(p))
    dead = tmp_path / f"{_workers.STATS_PREFIX}999999999-abc"  # no such pid
    alive = tmp_path / f"{_workers.STATS_PREFIX}{os.getpid()}-abc"
    dead.mkdir()
    alive.mkdir()
    made = _workers.make_stats_dir()
    assert made is not None and made.parent == tmp_path
    assert made.name.startswith(f"{_workers.STATS_PREFIX}{os.getpid()}-")
    assert not dead.exists() and alive.exists()


def test_without_a_directory_workers_report_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(**kwargs: Any) -> str:
        raise PermissionError("read-only")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with caplog.at_level(logging.WARNING, logger="modelport.workers"):
        assert _workers.make_stats_dir() is None
    assert "each worker reports only its own batch statistics" in caplog.text


def test_the_death_log_line_says_what_became_of_queued_connections(tmp_path: Path) -> None:
    setting = tmp_path / "tcp_migrate_req"
    assert "were reset)" in _workers.queued_connections_note(setting)  # no such setting
    setting.write_text("0\n")
    assert "were reset; sysctl net.ipv4.tcp_migrate_req=1 hands them to the other workers" in (
        _workers.queued_connections_note(setting)
    )
    setting.write_text("1\n")
    assert "moved to the other workers" in _workers.queued_connections_note(setting)


def test_reserving_a_port_another_reuseport_server_listens_on_fails() -> None:
    """Another server's SO_REUSEPORT socket would let ours join its group and share its
    connections; the reservation must refuse the port instead (EADDRINUSE)."""
    import errno
    import socket

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError) as taken:
            _workers.reserve_port("127.0.0.1", port).close()
    assert taken.value.errno == errno.EADDRINUSE
    with _workers.reserve_port("127.0.0.1", port) as mine:  # free again: reserved
        assert mine.getsockname()[1] == port


def test_an_ipv6_host_is_bound_ipv6_only_by_workers_as_by_one_process() -> None:
    """``--host ::`` binds IPv6 only in one process (uvicorn's, and ours for --port 0);
    the workers' sockets and the supervisor's did take IPv4 too (the kernel's default)."""
    import socket

    with _workers.reserve_port("::", 0) as held, _workers.reuseport_socket("::", 0) as worker:
        for sock in (held, worker):
            assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    with _workers.reuseport_socket("127.0.0.1", 0) as plain:
        assert plain.family == socket.AF_INET
