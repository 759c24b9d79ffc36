"""A server run as a child process: started, waited for, stopped with everything it started.

``modelport bench``, the test suite and ``benchmarks/`` start their servers with this. The
child runs in a session (so a process group) of its own, and ``stop()`` ends the whole
group: a multi-worker supervisor's HTTP workers, or anything else it spawned, cannot
outlive it and keep listening as orphans. Its stdout and stderr go to a file, not a pipe:
nothing reads a pipe while the server runs, and a server that logs a few hundred
tracebacks would block on a full one. The file's end explains a failure.

Until the child is reaped its pid still names its group, so this module learns that the
child has exited without reaping it (``waitid`` with ``WNOWAIT``) and signals the group
before it does. POSIX only; without ``os.waitid`` (macOS before Python 3.13) an exited
server is reaped at once, and what it left in its group is not reached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_TIMEOUT_S = 10.0  # then SIGKILL; callers that start `modelport serve` set their own
TAIL_BYTES = 4000
_POLL_S = 0.05  # how often stop() looks whether the server has exited


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free now; it may be taken later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerExited(RuntimeError):
    """The server exited before it was ready."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"the server exited with status {returncode}")
        self.returncode = returncode


class NotReady(RuntimeError):
    """The server did not become ready in time (it is still running)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the server did not become ready within {timeout_s:.0f} s")
        self.timeout_s = timeout_s


class ChildServer:
    """``command`` running in a session of its own, its output in ``log_path``.

    Subclasses add their readiness check and error messages on top of ``wait_until``, and
    may change how ``stop()`` asks the server to end (the class attributes)."""

    #: seconds ``stop()`` gives the server after SIGTERM, before SIGKILL to its group
    stop_timeout_s: float = STOP_TIMEOUT_S
    #: SIGTERM to the whole group rather than to the server alone (which then stops its
    #: own children, as a multi-worker supervisor does)
    terminate_group: bool = False

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, max_bytes: int = TAIL_BYTES) -> str:
        """The end of what the server has written (its log, tracebacks)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - max_bytes))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def exit_status(self) -> int | None:
        """The server's exit status once it has exited, else None. It is not reaped, so
        its pid keeps naming its group until ``stop()``."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        if not hasattr(os, "waitid"):  # macOS before Python 3.13
            return self.proc.poll()
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped behind Popen's back (SIGCHLD ignored)
            return self.proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def wait_until(
        self, ready: Callable[[], bool], timeout_s: float, interval_s: float = 0.1
    ) -> float:
        """Call ``ready()`` every ``interval_s`` until it answers True; return the seconds
        that took. Raises ServerExited if the server exits first, NotReady after
        ``timeout_s``; what ``ready()`` raises goes through."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            status = self.exit_status()
            if status is not None:
                raise ServerExited(status)
            if ready():
                return time.monotonic() - start
            time.sleep(interval_s)
        raise NotReady(timeout_s)

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then once the server has exited, or after ``timeout_s`` (default
        ``stop_timeout_s``) if it has not, SIGKILL to whatever is left of its group;
        returns its exit status. Calling it again only returns the status."""
        if self.proc.returncode is None:
            if self.exit_status() is None:
                self._signal(signal.SIGTERM, group=self.terminate_group)
                deadline = time.monotonic() + (
                    self.stop_timeout_s if timeout_s is None else timeout_s
                )
                while self.exit_status() is None and time.monotonic() < deadline:
                    time.sleep(_POLL_S)
            if self.proc.returncode is None:  # not reaped: its pid still names the group
                self._signal(signal.SIGKILL, group=True)
        return self.proc.wait()

    def _signal(self, sig: signal.Signals, group: bool) -> None:
        # called only while the server is not reaped (Popen.send_signal may reap it)
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
