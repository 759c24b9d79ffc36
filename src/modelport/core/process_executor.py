"""Worker processes for ``isolation: process``: each worker loads the model itself and
tensors travel through shared memory; only small metadata goes through the pipe.

Protocol, one request at a time per worker (every message is a tuple of plain data)::

    worker → parent   at start: ("ready", plain_signature) | ("load_error", class_path, message)
    parent → worker   ("run", request_name, response_name, response_size, input_slots)
    worker → parent   ("ok", output_slots) | ("err", class_path, message, traceback)
                      | ("grow", nbytes)            the outputs do not fit the response buffer
    parent → worker   ("resp", response_name, response_size)   answer to "grow"
    parent → worker   ("stop",)

A slot is ``(name, dtype_str, shape, offset)`` into a buffer, or ``(name, None, array, 0)``
for arrays that cannot live in raw memory (object or structured dtypes), which are pickled
with the message. The worker's half lives in ``_process_worker``, the parent's end of one
worker in ``_worker_link``. The parent owns every shared-memory segment (one request and
one response buffer per worker, grown on demand, shrunk after a run of small calls): it
creates and unlinks them, workers only attach. The parent reads its pipes with event-loop
readers, so no thread waits on a worker.

A worker that dies (EOF on its pipe, or its pidfd or process sentinel) fails the call it was running
with ``WorkerFailed`` and is restarted in the background, with back-off while restarts fail
or restarted workers die before proving themselves. A worker runs the model's code, so
what it sends is read as untrusted bytes (``_wire``); isolation protects the server from a
crashing or hanging model, not from a malicious one (same user, same environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from modelport import errors
from modelport.core._process_worker import (
    Message,
    Slot,
    layout,
    read_slots,
    segment_buf,
    signature_from_plain,
    worker_main,
    write_slots,
)
from modelport.core._wire import (
    BadFrame,
    checked_growth,
    checked_slots,
)
from modelport.core._worker_link import WorkerLink, describe_exit
from modelport.core.busy import BusyBoard
from modelport.core.executors import Executor
from modelport.core.registry import ExecutorFactory
from modelport.core.runtime import ModelConfig
from modelport.core.signature import NamedArrays, Signature
from modelport.errors import ConfigError, ModelFailed, WorkerFailed
from modelport.settings import DRAIN_TIMEOUT_S, LOAD_TIMEOUT_S, LONGEST_STOP_S

log = logging.getLogger("modelport.process_executor")

_OFF_LOOP_BYTES = 8 << 20  # bigger copies (> ~0.3 ms) run in a thread, off the event loop
STABLE_S = 30.0  # a worker that lived this long (or served a call) resets its slot's back-off

_REFUSAL_CHARS = 500
# Callers see a WorkerFailed's message (a 503 is not masked), and why a restart failed names
# the artifact's path and quotes the model's own exception: that goes to the log only.
_RESTART_FAILED = "no model worker is running: restarting one failed (the server log says why)"


def _loaded(msg: Message, where: str) -> Signature:
    """The signature a worker's first message carries, or the ``ConfigError`` it reports."""
    if msg[0] == "ready" and len(msg) == 2:
        try:
            return signature_from_plain(msg[1])
        except Exception:
            raise ConfigError(f"{where}: the model worker sent a malformed signature") from None
    if msg[0] == "load_error" and len(msg) == 3 and all(isinstance(p, str) for p in msg):
        kind, message = msg[1], msg[2]
        if not kind.startswith("modelport.errors."):
            message = f"{where}: loading raised {kind}: {message}"
        raise ConfigError(message)
    raise ConfigError(f"{where}: the model worker sent {msg[0][:40]!r} instead of its signature")


async def _off_loop_if_big(size: int, fit: Callable[[int], SharedMemory]) -> SharedMemory:
    """``fit(size)``, in a thread when a new segment of that size would be slow to back
    (posix_fallocate takes ~0.25 ms a MiB; a segment that fits already returns at once)."""
    if size > _OFF_LOOP_BYTES:
        return await asyncio.to_thread(fit, size)
    return fit(size)


def _retrieve(task: asyncio.Task[NamedArrays]) -> None:
    """Read an exchange's outcome: a caller cancelled meanwhile never will, and asyncio
    logs "Task exception was never retrieved" for an exception nobody read."""
    if not task.cancelled():
        task.exception()


def _longer(delay: float) -> float:
    """The next wait of a restart back-off: 0.5 s, doubling, at most 30 s."""
    return min(max(2 * delay, 0.5), 30.0)


def _broken(worker: WorkerLink) -> WorkerFailed:
    return WorkerFailed(f"the model worker (pid {worker.pid}) {worker.how}", "protocol")


def _error_reply(worker: WorkerLink, reply: Message) -> tuple[str, str, str, str]:
    """An ``("err", kind, message, traceback)`` reply, all strings, or the worker is killed."""
    if len(reply) == 4 and all(isinstance(part, str) for part in reply):
        return reply[0], reply[1], reply[2], reply[3]
    worker.kill("was stopped: it sent a malformed error reply")
    raise _broken(worker)


def _growth(worker: WorkerLink, reply: Message) -> int:
    """The size a ``("grow", nbytes)`` asks for, within bounds, or the worker is killed."""
    try:
        if len(reply) != 2:
            raise BadFrame("it sent a malformed request to grow")
        return checked_growth(reply[1])
    except BadFrame as exc:
        worker.kill(f"was stopped: {exc}")
        raise _broken(worker) from None


def _output_slots(worker: WorkerLink, reply: Message, capacity: int) -> tuple[list[Slot], int]:
    """The slots of an ``("ok", slots)`` reply, checked, and the response bytes they use;
    any other reply kills the worker."""
    try:
        if reply[0] != "ok" or len(reply) != 2:
            raise BadFrame(f"it sent {reply[0][:40]!r} where a reply was due")
        return checked_slots(reply[1], capacity)
    except BadFrame as exc:
        worker.kill(f"was stopped: {exc}")
        raise _broken(worker) from None


def _input_error(kind: str) -> type[errors.InvalidInput] | None:
    """The ``InvalidInput`` class a worker's error names, if it is one of modelport's own
    (a refusal of the data, such as the numpy plan's ``ValueOutOfRange``); None otherwise."""
    module, _, name = kind.rpartition(".")
    if module != errors.__name__:
        return None
    cls = getattr(errors, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, errors.InvalidInput) else None


class ProcessExecutor:
    """Runs a model in ``workers`` processes that each load it; a dead worker is restarted.

    Construct, then ``await start()`` (which returns the model's signature); ``run`` and
    ``close`` as for any ``Executor``.
    """

    def __init__(
        self,
        runtime: str,
        artifact: Path,
        config: ModelConfig,
        workers: int = 1,
        *,
        buffer_bytes: int = 1 << 20,
        stop_timeout_s: float = DRAIN_TIMEOUT_S,
        load_timeout_s: float = LOAD_TIMEOUT_S,
        term_grace_s: float = LONGEST_STOP_S,
        board: BusyBoard | None = None,
    ) -> None:
        """``stop_timeout_s``: how long ``close`` waits for running calls, and then for each
        worker to exit, before killing it (``server.drain_timeout_s``). ``load_timeout_s``:
        a worker not "ready" by then is killed, its load failed (``executors.load_timeout_s``).
        ``term_grace_s``: how long a worker defers a SIGTERM sent to the process group, so
        that this parent can finish its own graceful stop first (``longest_stop_s``)."""
        if workers < 1:
            raise ConfigError("a process executor needs at least one worker")
        self.slots = workers
        self._runtime = runtime
        self._artifact = artifact
        self._config = config
        self._buffer_bytes = buffer_bytes
        self._stop_timeout_s = stop_timeout_s
        self._load_timeout_s = load_timeout_s
        self._term_grace_s = term_grace_s
        # the HTTP workers' busy board: a batch's exchange marks this one busy, as the
        # worker processes compute on the cores a sibling would lend to a lone row
        self._board = board
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[WorkerLink | None] = [None] * workers
        self._idle: deque[WorkerLink] = deque()
        self._waiters: deque[asyncio.Future[WorkerLink]] = deque()
        self._inflight: set[asyncio.Task[NamedArrays]] = set()
        self._restarts: dict[int, asyncio.Task[None]] = {}
        self._restart_error: str | None = None
        # per slot, the wait before its next restart: it outlives each restart task, so a
        # worker that dies soon after "ready" is not restarted at full speed for ever
        self._backoff: dict[int, float] = {}
        self._started = False
        self._closed = False
        self.restarts = 0  # workers replaced after dying

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers now running."""
        return [w.pid for w in self._workers if w is not None and w.alive]

    async def start(self) -> Signature:
        """Start every worker and wait until each has loaded the model."""
        self._started = True
        spawns = [asyncio.ensure_future(self._spawn(i)) for i in range(self.slots)]
        try:
            await asyncio.wait(spawns)
        except asyncio.CancelledError:
            for task in spawns:  # an unfinished spawn stops its own worker when cancelled
                task.cancel()
            await self._abandon(spawns)
            raise
        failure = next((t.exception() for t in spawns if t.exception() is not None), None)
        if failure is not None:
            await self._abandon(spawns)
            raise failure
        started = [t.result() for t in spawns]
        for worker, _ in started:
            self._workers[worker.index] = worker
            if worker.alive:
                self._idle.append(worker)
            else:  # it died after "ready", while slower siblings were still loading
                self._worker_exited(worker, worker.how)
        return started[0][1]

    async def _abandon(self, spawns: list[asyncio.Task[tuple[WorkerLink, Signature]]]) -> None:
        """Stop the workers that did load: a failed or cancelled start leaves no process."""
        await asyncio.wait(spawns)
        loaded = [t.result()[0] for t in spawns if not t.cancelled() and t.exception() is None]
        await asyncio.gather(*(self._stop(worker) for worker in loaded))
        self._closed = True

    async def _spawn(self, index: int) -> tuple[WorkerLink, Signature]:
        where = str(self._artifact)
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=worker_main,
            args=(
                child_conn,
                self._runtime,
                str(self._artifact),
                self._config,
                self._term_grace_s,
            ),
            name=f"modelport-worker-{index}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()  # so the worker's death reads as EOF here
        worker = WorkerLink(index, process, parent_conn, self._worker_exited, self._buffer_bytes)
        try:
            msg = await asyncio.wait_for(worker.ask(None), self._load_timeout_s)
            return worker, _loaded(msg, where)
        except TimeoutError:
            worker.kill(f"was stopped: not loaded after {self._load_timeout_s:g} s")
            await self._stop(worker)
            raise ConfigError(f"{where}: the model worker {worker.how}") from None
        except WorkerFailed:
            await self._stop(worker)
            raise ConfigError(f"{where}: the model worker {worker.how} while loading") from None
        except ModelFailed:
            await self._stop(worker)
            raise ConfigError(f"{where}: the model worker's first message cannot be read") from None
        except BaseException:
            await self._stop(worker)
            raise

    # ── calls ────────────────────────────────────────────────────────────────────────────
    async def run(self, batch: NamedArrays) -> NamedArrays:
        worker = await self._acquire()
        # The exchange owns the worker until the worker answers, even if our caller is
        # cancelled meanwhile: a reply left unread would be taken for the next call's.
        task = asyncio.get_running_loop().create_task(self._exchange(worker, batch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _exchange(self, worker: WorkerLink, batch: NamedArrays) -> NamedArrays:
        board = self._board
        if board is not None:
            board.enter()
        try:
            slots, size = layout(batch)
            if size > _OFF_LOOP_BYTES:  # backing a new segment and the copy take a while
                request = await asyncio.to_thread(worker.request_buffer, size)
                await asyncio.to_thread(write_slots, segment_buf(request), batch, slots)
            else:
                request = worker.request_buffer(size)
                write_slots(segment_buf(request), batch, slots)
            response = worker.response_buffer(worker.response_need)
            reply = await worker.ask(("run", request.name, response.name, response.size, slots))
            while reply[0] == "grow":
                size = _growth(worker, reply)
                try:
                    response = await _off_loop_if_big(size, worker.response_buffer)
                except BaseException:
                    # the worker waits for "resp" and would read the next "run" as one:
                    # it cannot be reused, so it is stopped (and restarted)
                    worker.kill("was stopped: its response buffer could not grow")
                    raise
                reply = await worker.ask(("resp", response.name, response.size))
            if reply[0] == "err":
                _, kind, message, trace = _error_reply(worker, reply)
                worker.served = True
                refusal = _input_error(kind)
                if refusal is not None:  # one of modelport's 422s (e.g. value_out_of_range)
                    # Its message goes to the caller, as an in-process model's would; the
                    # model's code could have written it, so it is cut to a sane length.
                    raise refusal(message[:_REFUSAL_CHARS])
                log.error(
                    "model worker %d: predict raised %s: %s\n%s", worker.pid, kind, message, trace
                )
                # like the batcher: the model's own message goes to the log, not to callers
                raise ModelFailed(f"the model raised {kind.rsplit('.', 1)[-1]}")
            out_slots, need = _output_slots(worker, reply, len(segment_buf(response)))
            worker.response_need = need
            worker.served = True
            if need > _OFF_LOOP_BYTES:
                return await asyncio.to_thread(read_slots, segment_buf(response), out_slots, True)
            return read_slots(segment_buf(response), out_slots, copy=True)
        finally:
            self._release(worker)
            if board is not None:
                board.leave()

    async def _acquire(self) -> WorkerLink:
        while True:
            if self._closed or not self._started:
                raise WorkerFailed("the model's worker processes are not running", "closed")
            while self._idle:
                worker = self._idle.popleft()
                if worker.alive:
                    worker.busy = True
                    return worker
            if self._restart_error is not None and not self.pids:
                raise WorkerFailed(_RESTART_FAILED, "restart_failed")
            waiter: asyncio.Future[WorkerLink] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                worker = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._release(waiter.result())  # handed to us just as we were cancelled
                raise
            if worker.alive:
                return worker
            # it died between being handed to us and now: still ours to release, or its
            # shared memory is never unlinked
            self._release(worker)

    def _release(self, worker: WorkerLink) -> None:
        if not worker.alive or self._closed:
            worker.busy = False
            if not worker.alive:
                worker.free_buffers()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                worker.busy = True
                waiter.set_result(worker)
                return
        worker.busy = False
        self._idle.append(worker)

    # ── deaths and restarts ──────────────────────────────────────────────────────────────
    def _worker_exited(self, worker: WorkerLink, how: str) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        if not worker.busy:
            worker.free_buffers()
        if self._closed or self._workers[worker.index] is not worker:
            return
        if worker.served or worker.born + STABLE_S <= asyncio.get_running_loop().time():
            self._backoff.pop(worker.index, None)
        log.warning("model worker %d for %s %s; restarting it", worker.pid, self._artifact, how)
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._restarts[worker.index] = task
        task.add_done_callback(lambda _: self._restarts.pop(worker.index, None))

    async def _restart(self, dead: WorkerLink) -> None:
        await self._stop(dead)  # reap it and close its pipe
        delay = self._backoff.get(dead.index, 0.0)
        while not self._closed:
            if delay:
                log.info("restarting a model worker for %s in %g s", self._artifact, delay)
                await asyncio.sleep(delay)
            try:
                worker, _ = await self._spawn(dead.index)
            except Exception as exc:
                self._restart_error = str(exc)
                log.error("could not restart a model worker for %s: %s", self._artifact, exc)
                if not self.pids:
                    self._fail_waiters(WorkerFailed(_RESTART_FAILED, "restart_failed"))
                delay = _longer(delay)
                continue
            if self._closed:
                await self._stop(worker)
                return
            if not worker.alive:  # died between "ready" and now: one more failed attempt
                self._restart_error = f"the restarted worker {worker.how}"
                log.error("a restarted model worker for %s %s", self._artifact, worker.how)
                await self._stop(worker)
                delay = _longer(delay)
                continue
            self._backoff[dead.index] = _longer(delay)  # kept until the worker proves itself
            self._workers[dead.index] = worker
            self.restarts += 1
            self._restart_error = None
            log.info("model worker for %s restarted (pid %d)", self._artifact, worker.pid)
            self._release(worker)
            return

    def _fail_waiters(self, exc: WorkerFailed) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)

    # ── shutdown ─────────────────────────────────────────────────────────────────────────
    async def _stop(self, worker: WorkerLink) -> None:
        """Ask a worker to stop, kill it after the timeout, and release what it holds."""
        if worker.stopped:
            return
        process = worker.process
        if process.is_alive() and not worker.busy:
            with contextlib.suppress(OSError):
                worker.conn.send(("stop",))
        await asyncio.to_thread(process.join, self._stop_timeout_s if not worker.busy else 0)
        if process.is_alive():  # workers defer SIGTERM (see _defer_sigterm): no point in it
            process.kill()
            await asyncio.to_thread(process.join)
        worker.finish(describe_exit(process.exitcode))  # fails a call still waiting on it
        worker.close()
        process.close()
        worker.stopped = True
        if not worker.busy:
            worker.free_buffers()

    async def close(self) -> None:
        """Stop the workers (killing those that do not stop in time); unlink shared memory."""
        if self._closed and not self._inflight and not self._restarts:
            return
        self._closed = True
        restarts = list(self._restarts.values())
        for task in restarts:
            task.cancel()
        await asyncio.gather(*restarts, return_exceptions=True)
        self._fail_waiters(WorkerFailed("the model's worker processes are shutting down", "closed"))
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self._stop_timeout_s)
        workers = [w for w in self._workers if w is not None]
        self._workers = [None] * self.slots
        self._idle.clear()
        await asyncio.gather(*(self._stop(w) for w in workers))
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=1.0)
        for worker in workers:
            worker.free_buffers()


def process_executor_factory(
    workers: int,
    *,
    stop_timeout_s: float = DRAIN_TIMEOUT_S,
    load_timeout_s: float = LOAD_TIMEOUT_S,
    term_grace_s: float = LONGEST_STOP_S,
) -> ExecutorFactory:
    """An ``ExecutorFactory`` for the registry: starts a ``ProcessExecutor`` per version
    (the timeouts as ``ProcessExecutor`` takes them)."""

    async def factory(
        runtime: str, artifact: Path, config: ModelConfig, board: BusyBoard | None = None
    ) -> tuple[Signature, Executor]:
        executor = ProcessExecutor(
            runtime,
            artifact,
            config,
            workers,
            stop_timeout_s=stop_timeout_s,
            load_timeout_s=load_timeout_s,
            term_grace_s=term_grace_s,
            board=board,
        )
        signature = await executor.start()
        return signature, executor

    return factory
