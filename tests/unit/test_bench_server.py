"""The server ``modelport bench`` starts for itself (cli/_bench_server.py), driven with
small stand-in child processes instead of a real server. Stopping its process group is
``ChildServer``'s (test_process.py)."""

from __future__ import annotations

import sys
import time

import click
import pytest

from modelport.cli._bench_server import BenchServer


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_server_that_fills_its_stderr_neither_blocks_nor_hides_why_it_failed() -> None:
    """1 MB of log is far more than a pipe holds: written to a file, the child runs on
    and exits, and the failure shows the end of what it wrote."""
    server = BenchServer.launch(
        _python(
            "import sys; sys.stderr.write('x' * 1_000_000 + '\\nboom: port taken\\n'); sys.exit(3)"
        ),
        "http://127.0.0.1:1",
    )
    try:
        with pytest.raises(click.ClickException) as failed:
            server.wait_ready(lambda: False, timeout_s=30)
        assert "exited with status 3" in failed.value.message
        assert failed.value.message.endswith("boom: port taken")
    finally:
        server.stop()
    assert not server.log_path.exists()


def test_a_model_that_will_never_be_ready_fails_at_once_with_the_servers_stderr() -> None:
    server = BenchServer.launch(
        _python("import sys, time; print('loading iris failed', file=sys.stderr, flush=True); "
                "time.sleep(60)"),
        "http://127.0.0.1:1",
    )  # fmt: skip

    def ready() -> bool:
        if "failed" not in server.log_tail():
            return False
        raise click.ClickException("model iris version 1 failed to load")

    start = time.monotonic()
    try:
        with pytest.raises(click.ClickException) as failed:
            server.wait_ready(ready, timeout_s=30)
    finally:
        server.stop()
    assert time.monotonic() - start < 15
    message = failed.value.message
    assert message.startswith("model iris version 1 failed to load")
    assert "loading iris failed" in message


def test_its_sigkill_comes_after_the_supervisors_own_deadline() -> None:
    """A multi-worker server kills a worker still stopping ``STOP_MARGIN_S`` after the
    longest graceful stop, then removes its statistics directory from /dev/shm. A SIGKILL
    from bench at that same moment would leave the directory behind."""
    from modelport.cli._workers import STOP_MARGIN_S
    from modelport.settings import DRAIN_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, longest_stop_s

    supervisor_kills_at = longest_stop_s(SHUTDOWN_TIMEOUT_S, DRAIN_TIMEOUT_S) + STOP_MARGIN_S
    assert BenchServer.stop_timeout_s >= supervisor_kills_at + 2
