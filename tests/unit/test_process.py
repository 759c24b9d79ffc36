"""The child-server launcher (modelport/_process.py) that bench, the tests and the
benchmarks build on, driven with small stand-in child processes instead of a server."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from modelport._process import ChildServer, NotReady, ServerExited
from tests.conftest import process_ended


def _server_with_a_child(
    tmp_path: Path, before: str = "", then: str = "time.sleep(60)"
) -> ChildServer:
    """A stand-in server that starts a child (in its process group, sleeping), writes the
    child's pid to ``tmp_path/child``, then runs ``then``; ``before`` runs first."""
    code = (
        "import signal, subprocess, sys, time\n"
        f"{before}\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(child.pid))\n"
        f"{then}\n"
    )
    return ChildServer([sys.executable, "-c", code], tmp_path / "server.log")


def _child_pid(tmp_path: Path) -> int:
    pid_file = tmp_path / "child"
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the stand-in server never started its child"
        time.sleep(0.05)
    return int(pid_file.read_text())


def _assert_ends(pid: int) -> None:
    deadline = time.monotonic() + 10
    while not process_ended(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the server's child outlived it")
        time.sleep(0.05)


def test_stop_kills_the_whole_group_when_the_server_ignores_sigterm(tmp_path: Path) -> None:
    """A supervisor that does not stop in time is killed, and so are the workers it
    started, which would otherwise keep listening as orphans."""
    server = _server_with_a_child(tmp_path, before="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    child = _child_pid(tmp_path)
    assert server.stop(timeout_s=1) == -signal.SIGKILL
    _assert_ends(child)


def test_stop_ends_what_a_server_left_behind_when_it_exited(tmp_path: Path) -> None:
    """SIGTERM goes to the server alone; it exits at once, but its child, which got no
    signal, must not outlive the stop (nor wait out the timeout)."""
    server = _server_with_a_child(tmp_path)
    child = _child_pid(tmp_path)
    start = time.monotonic()
    assert server.stop(timeout_s=30) == -signal.SIGTERM
    assert time.monotonic() - start < 10
    _assert_ends(child)


def test_a_server_that_exits_before_it_is_ready_still_has_its_group_stopped(
    tmp_path: Path,
) -> None:
    """Noticing the exit does not reap the server, so its pid still names its group."""
    server = _server_with_a_child(tmp_path, then="sys.stderr.write('no model\\n'); sys.exit(3)")
    child = _child_pid(tmp_path)
    with pytest.raises(ServerExited) as exited:
        server.wait_until(lambda: False, timeout_s=30)
    assert exited.value.returncode == 3
    assert str(exited.value) == "the server exited with status 3"
    assert server.log_tail().endswith("no model\n")
    assert server.stop() == 3
    _assert_ends(child)
    assert server.stop() == 3  # again: only the status


def test_wait_until_returns_the_seconds_it_took_or_gives_up(tmp_path: Path) -> None:
    server = ChildServer([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log")
    try:
        calls: list[None] = []

        def third_time() -> bool:
            calls.append(None)
            return len(calls) == 3

        assert 0 < server.wait_until(third_time, timeout_s=30, interval_s=0.01) < 30
        assert len(calls) == 3
        with pytest.raises(NotReady) as not_ready:
            server.wait_until(lambda: False, timeout_s=0.2)
        assert not_ready.value.timeout_s == 0.2
    finally:
        assert server.stop() == -signal.SIGTERM
