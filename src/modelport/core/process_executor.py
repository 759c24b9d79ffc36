"""Isolated model workers: ``isolation: process`` in model.yaml.

Each worker process loads the model itself (the parent never does) and serves batches one
at a time. Tensors cross the process boundary through shared memory — one request and one
response segment per worker, grown on demand — and only small metadata (names, dtypes,
shapes, offsets) goes through the pipe; object arrays fall back to pickling. Errors cross
as plain strings (class path + message), never as pickled exception objects.

A worker that dies fails its in-flight batch with ``WorkerFailed`` (HTTP 503) at once and
is restarted in the background; later batches wait for a live worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.registry import ExecutorFactory
from modelport.core.runtime import ModelConfig
from modelport.core.signature import NamedArrays, Signature
from modelport.errors import ConfigError, ModelFailed, WorkerFailed

log = logging.getLogger("modelport.workers")

_INITIAL_BYTES = 1 << 20
_ALIGN = 64
Layout = list[tuple[str, str, tuple[int, ...], int, int]]  # name, dtype, shape, offset, nbytes


def _layout(arrays: NamedArrays) -> tuple[Layout, int]:
    layout: Layout = []
    offset = 0
    for name, array in arrays.items():
        layout.append((name, array.dtype.str, tuple(array.shape), offset, array.nbytes))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    return layout, offset


def _write(shm: SharedMemory, arrays: NamedArrays, layout: Layout) -> None:
    for name, dtype, shape, offset, _ in layout:
        target = np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=offset)
        target[...] = arrays[name]


def _read(shm: SharedMemory, layout: Layout, copy: bool) -> NamedArrays:
    out: NamedArrays = {}
    for name, dtype, shape, offset, _ in layout:
        view = np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=offset)
        out[name] = view.copy() if copy else view
    return out


def _shareable(arrays: NamedArrays) -> bool:
    return all(a.dtype.kind not in "OUS" for a in arrays.values())


# ── the worker process ───────────────────────────────────────────────────────


def _worker_main(conn: Connection, runtime: str, artifact: str, config: ModelConfig) -> None:
    from modelport.core.discovery import RuntimeTable

    try:
        model = RuntimeTable.discover().get(runtime).load(Path(artifact), config)
        model.warmup()
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)))
        return
    conn.send(("ready", model.signature))
    segments: dict[str, SharedMemory] = {}

    def segment(name: str) -> SharedMemory:
        if name not in segments:
            segments[name] = SharedMemory(name=name)
        return segments[name]

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        kind = message[0]
        if kind == "stop":
            return
        if kind == "forget":
            old = segments.pop(message[1], None)
            if old is not None:
                old.close()
            continue
        try:
            if kind == "shm":
                _, req_name, layout, resp_name = message
                inputs = _read(segment(req_name), layout, copy=False)
            else:
                _, inputs, resp_name = message
            outputs = {k: np.ascontiguousarray(v) for k, v in model.predict(inputs).items()}
            out_layout, size = _layout(outputs)
            resp = segment(resp_name)
            if _shareable(outputs) and size <= resp.size:
                _write(resp, outputs, out_layout)
                conn.send(("shm", out_layout))
            else:
                conn.send(("pickled", outputs, size))
        except BaseException as exc:
            conn.send(("raised", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc)))


# ── the parent side ──────────────────────────────────────────────────────────


@dataclass
class _Worker:
    index: int
    process: Any
    conn: Connection
    request: SharedMemory
    response: SharedMemory


class ProcessExecutor:
    """A pool of worker processes, each holding its own copy of one model version."""

    def __init__(self, runtime: str, artifact: Path, config: ModelConfig, workers: int = 1) -> None:
        self.slots = workers
        self._args = (runtime, str(artifact), config)
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * workers
        self._idle: asyncio.Queue[int] | None = None  # created on the running loop
        self._lock = threading.Lock()
        self._closed = False
        self._restarts: set[asyncio.Task[None]] = set()
        self.restarts = 0

    # lifecycle ----------------------------------------------------------------
    async def start(self) -> Signature:
        self._idle = asyncio.Queue()
        results = await asyncio.gather(
            *(asyncio.to_thread(self._spawn, i) for i in range(self.slots)),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        for i in range(self.slots):
            self._idle.put_nowait(i)
        return results[0]  # type: ignore[return-value]

    def _spawn(self, index: int) -> Signature:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, *self._args),
            name=f"modelport-worker-{index}",
            daemon=True,
        )
        process.start()
        child.close()
        try:
            message = parent.recv()
        except EOFError:
            process.join(5)
            raise ConfigError(
                f"model worker exited while loading (exit code {process.exitcode})"
            ) from None
        if message[0] == "error":
            process.join(5)
            raise ConfigError(f"model worker could not load the model: {message[1]}: {message[2]}")
        old = self._workers[index]
        self._workers[index] = _Worker(
            index,
            process,
            parent,
            _segment(_INITIAL_BYTES),
            _segment(_INITIAL_BYTES),
        )
        if old is not None:
            _release(old)
        signature: Signature = message[1]
        return signature

    async def close(self) -> None:
        self._closed = True
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers:
            if worker is not None:
                await asyncio.to_thread(_stop, worker)
                _release(worker)
        self._workers = [None] * self.slots

    # serving --------------------------------------------------------------------
    async def run(self, batch: NamedArrays) -> NamedArrays:
        assert self._idle is not None, "start() first"
        index = await self._idle.get()
        worker = self._workers[index]
        assert worker is not None
        try:
            return await asyncio.to_thread(self._call, worker, batch)
        except WorkerFailed:
            self._schedule_restart(index)
            raise
        finally:
            if self._workers[index] is worker and worker.process.is_alive():
                self._idle.put_nowait(index)

    def _call(self, worker: _Worker, batch: NamedArrays) -> NamedArrays:
        try:
            if _shareable(batch):
                layout, size = _layout(batch)
                if size > worker.request.size:
                    worker.conn.send(("forget", worker.request.name))
                    _unlink(worker.request)
                    worker.request = SharedMemory(
                        create=True, size=max(size, 2 * worker.request.size)
                    )
                _write(worker.request, batch, layout)
                worker.conn.send(("shm", worker.request.name, layout, worker.response.name))
            else:
                worker.conn.send(("pickled", batch, worker.response.name))
            reply = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            worker.process.join(1)
            code = worker.process.exitcode
            raise WorkerFailed(
                f"the model worker died (exit code {code}); it is being restarted",
                kind="process_exit",
            ) from None
        kind = reply[0]
        if kind == "shm":
            return _read(worker.response, reply[1], copy=True)
        if kind == "pickled":
            outputs: NamedArrays = reply[1]
            if reply[2] > worker.response.size:  # grow for next time
                worker.conn.send(("forget", worker.response.name))
                _unlink(worker.response)
                worker.response = SharedMemory(
                    create=True, size=max(reply[2], 2 * worker.response.size)
                )
            return outputs
        log.error("model raised in worker: %s: %s", reply[1], reply[2])
        raise ModelFailed(f"the model raised {reply[1].rsplit('.', 1)[-1]}")

    def _schedule_restart(self, index: int) -> None:
        if self._closed:
            return

        async def restart() -> None:
            assert self._idle is not None
            while not self._closed:
                try:
                    await asyncio.to_thread(self._spawn, index)
                    self.restarts += 1
                    log.warning("model worker %d restarted", index)
                    self._idle.put_nowait(index)
                    return
                except ConfigError as exc:
                    log.error("restarting model worker %d failed: %s", index, exc)
                    await asyncio.sleep(1.0)

        task = asyncio.get_running_loop().create_task(restart())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)


def _stop(worker: _Worker) -> None:
    with contextlib.suppress(OSError, BrokenPipeError):
        worker.conn.send(("stop",))
    worker.process.join(5)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(5)
    worker.conn.close()


def _segment(size: int) -> SharedMemory:
    return SharedMemory(create=True, size=size)


def _unlink(shm: SharedMemory) -> None:
    shm.close()
    with contextlib.suppress(FileNotFoundError):
        shm.unlink()


def _release(worker: _Worker) -> None:
    _unlink(worker.request)
    _unlink(worker.response)


def process_executor_factory(workers: int) -> ExecutorFactory:
    """The registry hook for ``isolation: process``: start workers, return their signature."""

    async def start(runtime: str, artifact: Path, config: ModelConfig) -> tuple[Signature, Any]:
        executor = ProcessExecutor(runtime, artifact, config, workers)
        signature = await executor.start()
        return signature, executor

    return start
