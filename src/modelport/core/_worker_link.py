"""The parent's end of one model worker process: its pipe (read in whole frames from the
event loop), its exit (a pidfd or the process sentinel), its shared-memory segments and
the reply being awaited. ``process_executor`` pools these; the protocol is described there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.shared_memory import SharedMemory

from modelport.core._process_worker import Message
from modelport.core._wire import BadFrame, FrameReader, decode
from modelport.errors import ModelFailed, Overloaded, WorkerFailed

log = logging.getLogger("modelport.process_executor")

_EXIT_GRACE_S = 2.0  # after a pipe EOF, how long to wait for the exit code before failing
_PAGE = 4096
_SHRINK_AFTER = 64  # calls in a row a segment was 4x too big before it is made smaller
# One read per readable event returns what is there, up to this: sized for the common small
# message, as os.read allocates the whole size first (1 MiB cost ~40 us a call); the rest
# of a big frame, whose size the header gave, is asked for at once.
_READ_BYTES = 64 << 10


def describe_exit(code: int | None) -> str:
    if code is None:
        return "closed its pipe"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _new_segment(size: int, current: SharedMemory | None, minimum: int) -> SharedMemory:
    old = current.size if current is not None else 0
    size = max(size, 2 * old, minimum)
    size = -(-size // _PAGE) * _PAGE
    shm = SharedMemory(name=f"mp{os.getpid()}_{secrets.token_hex(6)}", create=True, size=size)
    try:
        _reserve(shm, size)
    except BaseException:
        _free(shm)
        raise
    return shm


def _reserve(shm: SharedMemory, size: int) -> None:
    """Back the whole segment with memory now. A new segment is only a size: on a full
    /dev/shm the first write past the free space kills the writer with SIGBUS, and the
    writer is this server."""
    allocate = getattr(os, "posix_fallocate", None)  # not on macOS
    if allocate is None:
        return
    try:
        allocate(shm._fd, 0, size)  # type: ignore[attr-defined]  # SharedMemory keeps its fd
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot say
            return
        if exc.errno == errno.ENOSPC:
            log.error("shared memory is full: %d bytes for model tensors do not fit", size)
            raise Overloaded("the server is out of shared memory for the model's tensors") from None
        raise


def _pidfd(pid: int) -> int | None:
    """A descriptor readable once ``pid`` exits (Linux 5.3+), or None.

    multiprocessing's sentinel is a pipe the child holds open, and so does anything the
    model forks: its end closes only when the last of them exits, and a killed worker with
    a forked helper would never be seen to die."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or pid <= 0:
        return None
    try:
        fd: int = pidfd_open(pid)
    except OSError:  # an older kernel, or a sandbox refusing the call
        return None
    return fd


def _free(shm: SharedMemory | None) -> None:
    if shm is None:
        return
    with contextlib.suppress(BufferError):
        shm.close()
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()


class WorkerLink:
    """The parent's end of one worker: process, pipe, buffers and the reply being awaited."""

    def __init__(
        self,
        index: int,
        process: SpawnProcess,
        conn: Connection,
        on_exit: Callable[[WorkerLink, str], None],
        buffer_bytes: int,
    ) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.pid = process.pid or 0
        self.alive = True
        self.busy = False
        self.stopped = False
        self.how = ""  # how it died, once it has
        self.served = False  # answered a call: it works, whatever made its predecessors die
        self._reaping = False
        self.request: SharedMemory | None = None
        self.response: SharedMemory | None = None
        self._min = buffer_bytes
        self._small_calls = [0, 0]  # calls in a row the request/response segment was 4x too big
        self.response_need = 0  # the last reply's bytes
        self._on_exit = on_exit
        self._reply: asyncio.Future[Message] | None = None
        self._frames = FrameReader()
        self._loop = asyncio.get_running_loop()
        self.born = self._loop.time()
        self._pipe_fd = conn.fileno()
        self._pidfd = _pidfd(self.pid)
        self._sentinel = self._pidfd if self._pidfd is not None else process.sentinel
        self._exit_timer: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._pipe_fd, self._readable)
        self._loop.add_reader(self._sentinel, self._exited)

    def ask(self, msg: Message | None) -> asyncio.Future[Message]:
        """Send ``msg`` (None: just wait) and return a future for the worker's next message."""
        reply: asyncio.Future[Message] = self._loop.create_future()
        if not self.alive:
            reply.set_exception(WorkerFailed(f"model worker {self.pid} is not running", "died"))
            return reply
        self._reply = reply
        if msg is not None:
            try:
                self.conn.send(msg)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the worker is dying; its readers will fail the reply in a moment
            except BaseException:
                self._reply = None
                raise
        return reply

    def request_buffer(self, size: int) -> SharedMemory:
        self.request = self._fit(self.request, size, 0)
        return self.request

    def response_buffer(self, size: int) -> SharedMemory:
        """The response segment for a reply of ``size`` bytes (at the start of a call: the
        size of the last reply, the best guess there is; the worker asks if it is short)."""
        self.response = self._fit(self.response, size, 1)
        return self.response

    def _fit(self, current: SharedMemory | None, size: int, which: int) -> SharedMemory:
        """``current`` if it holds ``size`` bytes, else a bigger segment in its place; a
        smaller one once ``current`` has been far too big for ``_SHRINK_AFTER`` calls."""
        if current is not None and size <= current.size:
            if not self._oversized(current, size, which):
                return current
            new = _new_segment(2 * size, None, self._min)
        else:
            new = _new_segment(size, current, self._min)
        _free(current)
        return new

    def _oversized(self, current: SharedMemory, size: int, which: int) -> bool:
        # One huge batch must not pin its memory for ever (segments are backed, see
        # _reserve); a run of calls, not one, so that alternating sizes do not thrash.
        if current.size <= self._min or 4 * size > current.size:
            self._small_calls[which] = 0
            return False
        self._small_calls[which] += 1
        if self._small_calls[which] < _SHRINK_AFTER:
            return False
        self._small_calls[which] = 0
        return True

    def free_buffers(self) -> None:
        _free(self.request)
        _free(self.response)
        self.request = self.response = None

    def _deliver(self, frame: bytes) -> None:
        reply, self._reply = self._reply, None
        if reply is None or reply.done():
            if reply is None or not reply.cancelled():  # a cancelled wait drops its reply
                log.warning("model worker %d sent a message nobody asked for", self.pid)
            return
        try:
            reply.set_result(decode(frame))
        except Exception as exc:
            # The frame was read whole, so the pipe stays in step and the worker can serve
            # again; typically the model returned objects of its own classes.
            log.error("model worker %d sent a reply the server cannot read: %s", self.pid, exc)
            reply.set_exception(ModelFailed("the model returned an output the server cannot read"))

    def _read(self) -> bool:
        """Take what the pipe holds and deliver the frames it completes; False at EOF."""
        try:
            data = os.read(self._pipe_fd, max(_READ_BYTES, self._frames.missing))
        except OSError:
            data = b""
        if not data:
            return False
        for frame in self._frames.feed(data):
            self._deliver(frame)
        return True

    def _readable(self) -> None:
        try:
            if self._read():
                return
            self._loop.remove_reader(self._pipe_fd)
            # the exit code follows within milliseconds through the sentinel; don't hang on it
            self._exit_timer = self._loop.call_later(_EXIT_GRACE_S, self._exited)
        except BadFrame as exc:
            self.kill(f"was stopped: {exc}")
        except Exception:  # a bug here must never leave a caller waiting for ever
            log.exception("reading model worker %d failed", self.pid)
            self.kill("was stopped: reading its replies failed")

    def _exited(self) -> None:
        """The sentinel fired (or the pipe closed a while ago): collect the exit code, report."""
        if not self.alive or self._reaping:
            return
        self._reaping = True
        try:
            self.unwatch()
            while self.conn.poll():  # a reply written just before dying still counts
                if not self._read():
                    break
        except BadFrame as exc:
            self.kill(f"was stopped: {exc}")
            return
        except Exception:
            log.exception("collecting model worker %d's last replies failed", self.pid)
        self._reap(0)

    def kill(self, how: str) -> None:
        """Kill the process now and fail the call waiting on it (it is then restarted)."""
        with contextlib.suppress(Exception):
            self.process.kill()
        self.finish(how)

    def _reap(self, tries: int) -> None:
        # the sentinel can fire a moment before the child can be waited for
        code = self.process.exitcode
        if code is None and tries < 20:
            self._exit_timer = self._loop.call_later(0.005, self._reap, tries + 1)
            return
        self.finish(describe_exit(code))

    def finish(self, how: str) -> None:
        """Mark the worker dead: fail the call waiting on it and tell the executor."""
        if not self.alive:
            return
        self.alive = False
        self.how = how
        self.unwatch()
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.set_exception(WorkerFailed(f"the model worker (pid {self.pid}) {how}", "died"))
        self._on_exit(self, how)

    def unwatch(self) -> None:
        self._loop.remove_reader(self._pipe_fd)
        self._loop.remove_reader(self._sentinel)
        if self._exit_timer is not None:
            self._exit_timer.cancel()

    def close(self) -> None:
        """Stop watching, and close the pipe and the pidfd (the process is reaped)."""
        self.unwatch()
        self.conn.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
