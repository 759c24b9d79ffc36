"""The server ``modelport bench`` starts for itself, and stopping it without leftovers.

The server runs in a session (so a process group) of its own: if it does not stop when
asked, one signal to the group also reaches the HTTP workers a multi-worker supervisor
spawned, which would otherwise keep listening as orphans. Its stderr goes to a temporary
file, not a pipe: nothing reads a pipe while the benchmark runs, and a server that logs a
few hundred 5xx tracebacks would block on a full one. The file's tail explains a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0  # the workers' graceful shutdown is 10 s too; then SIGKILL
TAIL_BYTES = 4000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchServer:
    """A child process serving HTTP on ``url``; ``stop()`` must follow ``launch()``."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

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
        try:
            with os.fdopen(fd, "wb") as log:
                proc = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
                )
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return cls(proc, url, Path(name))

    def stderr_tail(self) -> str:
        """The end of what the server wrote to stderr (its log, tracebacks)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def failure(self, message: str) -> click.ClickException:
        tail = self.stderr_tail().strip()
        return click.ClickException(
            f"{message}\nthe server's stderr ends with:\n{tail}" if tail else message
        )

    def wait_ready(self, ready: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``ready()`` (False: not yet; a ClickException: it never will be) until it
        answers True, the server exits, or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.failure(f"the server exited with status {self.proc.returncode}")
            try:
                if ready():
                    return
            except click.ClickException as exc:
                raise self.failure(exc.message) from None
            time.sleep(0.2)
        raise self.failure(f"the server did not become ready within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a supervisor stops its workers and removes its statistics directory);
        if the server is still running after ``timeout_s``, SIGKILL to its whole group."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    # the leader is not reaped yet, so its group id still names this group
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
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
