"""HTTP worker processes, each with its own listening socket on the shared port.

uvicorn's own ``--workers`` has every process accept from one shared socket, and the first
to wake takes a whole burst of connections: measured here, 64 connections from wrk split
61/3 and 54/10 between two workers, so one process did nearly all the work. With
``SO_REUSEPORT`` each worker listens on a socket of its own and the kernel spreads new
connections across them by address hash (docs/architecture.md, "Using every core").

This supervisor starts the workers (spawned, so each builds its own services from the
settings the parent published), restarts one that dies, gives up if they keep dying at
start-up, and on SIGINT/SIGTERM asks each to shut down gracefully (uvicorn's handling of
SIGTERM in the worker), then waits. The parent keeps a socket bound to the port (never
listening, so it takes no connections) to hold the port for the group while workers
restart. Each worker asks the kernel to end it (SIGTERM) when the supervisor dies, so a
supervisor killed outright (SIGKILL, the OOM killer) leaves no worker serving on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.core.busy import make_board

log = logging.getLogger("modelport.workers")

RESTARTS_ALLOWED = 5  # within RESTART_WINDOW_S; past that the server gives up
RESTART_WINDOW_S = 60.0
# beyond a worker's longest graceful stop (settings.longest_stop_s), for the rest of its
# lifespan's shutdown (usage flush, stores), before the supervisor kills it
STOP_MARGIN_S = 5.0


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def tcp_socket(host: str) -> socket.socket:
    """An unbound TCP socket for ``host``: IPv6 for an address with a ":" (IPv6 only, as
    uvicorn binds one on a port it is given), IPv4 for anything else, a host name
    included (``localhost`` is 127.0.0.1 here; README, "Serve")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return sock


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT; not yet listening."""
    sock = tcp_socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """The supervisor's socket holding (host, port) for its workers' SO_REUSEPORT group.

    SO_REUSEPORT alone would also join a group another server of the same user already
    listens in, and the two would silently share the port's connections. So a plain
    socket (SO_REUSEADDR only, which a listener on the port refuses) is bound first; it
    raises EADDRINUSE if anything holds the port. Port 0 needs no check: it is new."""
    if port != 0:
        with tcp_socket(host) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    return reuseport_socket(host, port)


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def queued_connections_note(setting: Path = MIGRATE_REQ) -> str:
    """What became of the connections waiting in a dead worker's own accept queue, for the
    log line that reports the death. The kernel resets them, unless (Linux 5.14+)
    ``net.ipv4.tcp_migrate_req`` is 1: then it moves them to a sibling's socket."""
    try:
        value = setting.read_text().strip()
    except OSError:  # not Linux, or a kernel without the setting
        return " (connections waiting in its accept queue were reset)"
    if value == "1":
        return " (connections waiting in its accept queue moved to the other workers)"
    return (
        " (connections waiting in its accept queue were reset; "
        "sysctl net.ipv4.tcp_migrate_req=1 hands them to the other workers)"
    )


@dataclass(frozen=True)
class WorkerSlot:
    """Which worker this process is, and the directory the workers share batch statistics
    (``observe/worker_stats.py``) and the busy board (``core/busy.py``) in; None: no
    directory could be made, each worker reports its own and lends no cores. Set before
    uvicorn builds the app."""

    index: int
    stats_dir: Path | None


STATS_PREFIX = "modelport-stats-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def make_stats_dir() -> Path | None:
    """A directory for the workers' batch statistics, ``modelport-stats-<pid>-*`` on tmpfs
    where there is one. Directories left by a supervisor that was killed (its pid gone)
    are removed first. None if no directory can be made: statistics are not worth a
    failed start."""
    shm = Path("/dev/shm")
    bases = [shm, None] if shm.is_dir() else [None]  # None: the system's temp dir
    for base in bases:
        root = Path(base or tempfile.gettempdir())
        with contextlib.suppress(OSError):
            for old in root.glob(f"{STATS_PREFIX}*-*"):
                pid = old.name[len(STATS_PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
        try:
            return Path(tempfile.mkdtemp(prefix=f"{STATS_PREFIX}{os.getpid()}-", dir=base))
        except OSError as exc:
            log.warning("cannot make a directory for batch statistics in %s: %s", root, exc)
    log.warning("each worker reports only its own batch statistics")
    return None


slot: WorkerSlot | None = None  # in a worker process: its slot; None elsewhere

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(parent: int) -> None:
    """End this process with SIGTERM when ``parent`` (the supervisor) dies: uvicorn then
    shuts the worker down as if the supervisor had asked. Linux only (prctl); elsewhere a
    worker outlives a supervisor that was killed outright.

    The request covers only a death after it is made, so the parent is checked once
    more afterwards: a supervisor that died while this worker was starting has already
    handed it to another parent, and the worker leaves at once."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            log.warning("this worker will outlive a killed supervisor (prctl: %s)", exc)
    if os.getppid() != parent:
        log.warning("the supervisor (pid %d) is gone; this worker stops", parent)
        raise SystemExit(1)


def _worker_main(
    config_kwargs: dict[str, Any],
    host: str,
    port: int,
    index: int,
    stats_dir: Path | None,
    supervisor: int,
) -> None:
    """One worker: its own socket in the port's SO_REUSEPORT group, then uvicorn's server."""
    import uvicorn

    exit_with_parent(supervisor)
    global slot
    slot = WorkerSlot(index, stats_dir)
    sock = reuseport_socket(host, port)
    config = uvicorn.Config(**config_kwargs)
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(
    count: int,
    config_kwargs: dict[str, Any],
    host: str,
    port: int,
    on_bound: Callable[[int], None] | None = None,
    *,
    worker_stop_s: float,
) -> int:
    """Run ``count`` workers until SIGINT/SIGTERM; returns the exit status. ``on_bound``
    gets the port once it is reserved (the one the system chose, for port 0).
    ``worker_stop_s``: the longest a worker's graceful stop takes; one still running
    ``STOP_MARGIN_S`` after that is killed."""
    reserved = reserve_port(host, port)  # fails here, clearly, if the port is taken
    port = reserved.getsockname()[1]
    if on_bound is not None:
        on_bound(port)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    stats_dir = make_stats_dir()
    if stats_dir is not None:
        try:
            make_board(stats_dir, count)
        except OSError as exc:  # the workers then run lone rows on their own share
            log.warning("cannot make the workers' busy board: %s", exc)

    def start(index: int) -> Any:
        process = context.Process(
            target=_worker_main,
            args=(config_kwargs, host, port, index, stats_dir, os.getpid()),
            name="modelport-worker",
        )
        process.start()
        return process

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes = [start(i) for i in range(count)]
    restarts: list[float] = []
    status = 0
    try:
        while not stop.wait(0.25):
            for i, process in enumerate(processes):
                if process.is_alive():
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(restarts) > RESTARTS_ALLOWED:
                    log.error(
                        "workers keep exiting (%d restarts in %.0f s); stopping",
                        len(restarts) - 1,
                        RESTART_WINDOW_S,
                    )
                    status = 1
                    stop.set()
                    break
                log.warning(
                    "worker %d (pid %s) exited with status %s; starting another%s",
                    i,
                    process.pid,
                    process.exitcode,
                    queued_connections_note(),
                )
                processes[i] = start(i)  # the same slot: its statistics start again
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn finishes in-flight requests first
        allowed_s = worker_stop_s + STOP_MARGIN_S
        deadline = time.monotonic() + allowed_s  # they stop together
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning(
                    "worker (pid %s) was still running %.0f s after SIGTERM; killing it",
                    process.pid,
                    allowed_s,
                )
                process.kill()
                process.join()
        reserved.close()
        if stats_dir is not None:
            shutil.rmtree(stats_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
