"""The server ``modelport bench`` starts for itself, and its failures as click errors.

It is a ``ChildServer`` (``modelport/_process.py``): a session of its own, so stopping it
also stops the workers a multi-worker supervisor spawned, and its output in a temporary
file (removed when it stops) whose end explains a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from modelport._process import ChildServer, NotReady, ServerExited, free_port
from modelport.cli._workers import STOP_MARGIN_S
from modelport.settings import LONGEST_STOP_S

READY_TIMEOUT_S = 120.0


class BenchServer(ChildServer):
    """A child process serving HTTP on ``url``; ``stop()`` must follow ``launch()``."""

    # The server bench starts keeps the default stop settings: its longest graceful stop
    # (25 s), then the supervisor's own margin before it kills a worker still stopping,
    # then time for it to clean up (its statistics directory), before SIGKILL. It is idle
    # by then, so it exits at once.
    stop_timeout_s = LONGEST_STOP_S + STOP_MARGIN_S + 5.0

    def __init__(self, command: list[str], url: str, log_path: Path) -> None:
        super().__init__(command, log_path)
        self.url = url

    @classmethod
    def serve(cls, serve_args: list[str]) -> BenchServer:
        """``modelport serve SERVE_ARGS`` on a free local port."""
        port = free_port()
        command = [sys.executable, "-m", "modelport", "serve", "--port", str(port)]
        command += ["--log-level", "warning", *serve_args]
        return cls.launch(command, f"http://127.0.0.1:{port}")

    @classmethod
    def launch(cls, command: list[str], url: str) -> BenchServer:
        fd, name = tempfile.mkstemp(prefix="modelport-bench-", suffix=".log")
        os.close(fd)
        try:
            return cls(command, url, Path(name))
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def failure(self, message: str) -> click.ClickException:
        tail = self.log_tail().strip()
        return click.ClickException(
            f"{message}\nthe server's stderr ends with:\n{tail}" if tail else message
        )

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``ready()`` (False: not yet; a ClickException: it never will be) until it
        answers True, the server exits, or ``timeout_s`` passes."""
        try:
            self.wait_until(ready, timeout_s, interval_s=0.2)
        except (ServerExited, NotReady) as exc:
            raise self.failure(str(exc)) from None
        except click.ClickException as exc:
            raise self.failure(exc.message) from None

    def stop(self, timeout_s: float | None = None) -> int:
        """``ChildServer.stop()`` (SIGTERM: a supervisor stops its workers and removes its
        statistics directory), then the log file goes too."""
        try:
            return super().stop(timeout_s)
        finally:
            self.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit, so ``finally`` clauses run and stop the
    server (the default action ends the process at once and leaves the server running).
    Later SIGTERMs are ignored until the block ends, so they cannot cut the clean-up short."""

    def exit_once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
