"""``modelport bench`` with the server it starts for itself: nothing may outlive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import process_ended

pytestmark = pytest.mark.e2e


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        try:
            text = Path(f"/proc/{todo[0]}/task/{todo[0]}/children").read_text()
        except OSError:
            text = ""
        todo.pop(0)
        for child in map(int, text.split()):
            found.add(child)
            todo.append(child)
    return found


def test_sigterm_to_bench_stops_its_server_and_the_servers_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    env["MODELPORT_WORKERS"] = "2"  # a supervisor and its workers: the hard case
    err = tmp_path / "bench.err"
    with err.open("wb") as stderr:
        bench = subprocess.Popen(
            [sys.executable, "-m", "modelport", "bench", "iris", "--data-dir",
             str(tmp_path / "data"), "-c", "1", "-d", "120", "--warmup", "0"],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=tmp_path,
        )  # fmt: skip
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while "connections" not in err.read_text(errors="replace"):  # the measured run
            assert bench.poll() is None, err.read_text(errors="replace")
            assert time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.2)
        started = _descendants(bench.pid)
        assert len(started) >= 3, started  # the supervisor and its two workers
        stats_dirs = [d for p in started for d in Path("/dev/shm").glob(f"modelport-stats-{p}-*")]
        assert stats_dirs
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) != 0
        deadline = time.monotonic() + 10
        while left := {p for p in started if not process_ended(p)}:
            assert time.monotonic() < deadline, f"still running: {left}"
            time.sleep(0.1)
        assert not any(d.exists() for d in stats_dirs)
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in started:  # what a failed run left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_bench_sends_its_headers_on_every_request_to_a_server_with_keys(
    start_server: Any, tmp_path: Path, demo_data_dir: Path
) -> None:
    """With --auth keys, bench's own reads (the model's description, its batch counters)
    need the key as much as the predictions do."""
    import json

    from click.testing import CliRunner

    from modelport.cli.keys import keys

    data = tmp_path / "data"
    server = start_server(
        "--repository", str(demo_data_dir / "demo"), "--data-dir", str(data), "--auth", "keys"
    )
    created = CliRunner().invoke(
        keys,
        ["create", "--json", "--name", "bench", "--scopes", "read,predict:iris",
         "--data-dir", str(data)],
        catch_exceptions=False,
    )  # fmt: skip
    key = json.loads(created.output)["key"]
    out = subprocess.run(
        [sys.executable, "-m", "modelport", "bench", "iris", "--url", server.url, "-c", "2",
         "-d", "0.5", "--warmup", "0", "--header", f"X-API-Key: {key}", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["requests"] > 0 and row["non_2xx"] == 0 and row["errors"] == 0
    assert row["mean_batch_rows"] >= 1
