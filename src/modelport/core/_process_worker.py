"""The worker half of ``isolation: process`` and the plain data both halves share.

A worker process runs ``worker_main``: it loads the model itself, answers ``("ready", …)``
and then serves ``("run", …)`` messages one at a time, reading inputs from and writing
outputs to shared-memory segments the parent owns. See ``process_executor`` for the
protocol and the parent's side. Nothing here touches asyncio: a worker is a plain loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import fields
from enum import Enum
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.discovery import RuntimeTable
from modelport.core.runtime import ModelConfig
from modelport.core.signature import ContentKind, NamedArrays, Signature, Task, TensorSpec

Slot = tuple[str, str | None, Any, int]
Message = tuple[Any, ...]

_ALIGN = 64  # every array in a buffer starts on a cache line


# ── plain data shared by both sides ──────────────────────────────────────────────────────
def class_path(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def plain_signature(signature: Signature) -> dict[str, Any]:
    def spec(s: TensorSpec) -> dict[str, Any]:
        out = {f.name: getattr(s, f.name) for f in fields(s) if f.init}
        return {k: v.value if isinstance(v, Enum) else v for k, v in out.items()}

    return {
        "inputs": [spec(s) for s in signature.inputs],
        "outputs": [spec(s) for s in signature.outputs],
        "task": signature.task.value,
        "labels": signature.labels,
    }


def signature_from_plain(raw: Mapping[str, Any]) -> Signature:
    def spec(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(**{**d, "kind": ContentKind(d["kind"])})

    return Signature(
        inputs=tuple(spec(s) for s in raw["inputs"]),
        outputs=tuple(spec(s) for s in raw["outputs"]),
        task=Task(raw["task"]),
        labels=raw["labels"],
    )


def layout(arrays: Mapping[str, np.ndarray]) -> tuple[list[Slot], int]:
    """Where each array goes in a buffer, and the bytes needed."""
    slots: list[Slot] = []
    offset = 0
    for name, array in arrays.items():
        dtype = array.dtype
        if dtype.hasobject or dtype.fields is not None:
            slots.append((name, None, array, 0))
            continue
        slots.append((name, dtype.str, array.shape, offset))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    return slots, offset


def segment_buf(shm: SharedMemory) -> memoryview:
    buf = shm.buf
    assert buf is not None, "the segment is closed"
    return buf


def write_slots(buf: memoryview, arrays: Mapping[str, np.ndarray], slots: list[Slot]) -> None:
    for name, dtype, shape, offset in slots:
        array = arrays[name]
        if dtype is not None and array.nbytes:
            np.copyto(np.ndarray(shape, dtype, buffer=buf, offset=offset), array, casting="no")


def read_slots(buf: memoryview, slots: list[Slot], copy: bool) -> NamedArrays:
    out: NamedArrays = {}
    for name, dtype, payload, offset in slots:
        if dtype is None:
            out[name] = payload
        elif np.prod(payload, dtype=np.int64) == 0:
            out[name] = np.empty(payload, dtype)
        else:
            view = np.ndarray(payload, dtype, buffer=buf, offset=offset)
            out[name] = view.copy() if copy else view
    return out


# ── the worker process ───────────────────────────────────────────────────────────────────
class _Attached:
    """A worker's mapping of one parent-owned segment; re-attached when the parent swaps it."""

    def __init__(self) -> None:
        self._shm: SharedMemory | None = None
        self._kept: list[SharedMemory] = []  # mappings a model still holds views into

    def buf(self, name: str) -> memoryview:
        if self._shm is None or self._shm.name != name:
            self.close()
            self._shm = SharedMemory(name=name)
        return segment_buf(self._shm)

    def close(self) -> None:
        if self._shm is not None:
            try:
                self._shm.close()
            except BufferError:  # the model kept a view of its inputs; unmapped at exit
                self._kept.append(self._shm)
            self._shm = None


def _serve_one(
    conn: Connection, model: Any, msg: Message, request: _Attached, response: _Attached
) -> None:
    _, request_name, response_name, response_size, slots = msg
    try:
        inputs = read_slots(request.buf(request_name), slots, copy=False)
        outputs = {str(k): np.asarray(v) for k, v in model.predict(inputs).items()}
        del inputs
        out_slots, needed = layout(outputs)
        if needed > response_size:
            conn.send(("grow", needed))
            _, response_name, response_size = conn.recv()
        write_slots(response.buf(response_name), outputs, out_slots)
        conn.send(("ok", out_slots))
    except Exception as exc:
        conn.send(("err", class_path(exc), str(exc), traceback.format_exc()))


def _defer_sigterm(grace_s: float) -> None:
    """Make SIGTERM an exit ``grace_s`` later instead of at once: the parent's longest
    graceful stop (it answers its requests and drains first, then stops its workers), after
    which the worker exits by itself, in case no parent ever stops it.

    A SIGTERM sent to the whole process group (a supervisor stopping the server) would
    otherwise kill the workers before the parent has answered the requests they run; the
    parent stops them itself. Ignoring it outright would let a stuck worker outlive a
    parent that never stops it (multiprocessing's exit handler waits on it after its own
    SIGTERM). The signal is caught (whichever thread gets it: numpy's own threads exist
    already) and Python's handler writes it to the wakeup fd at once, where a thread waits,
    so it is seen even while the model's code runs in C.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def wait() -> None:
        while os.read(read_fd, 1) != bytes([signal.SIGTERM]):
            pass
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=wait, name="sigterm-grace", daemon=True).start()


def worker_main(
    conn: Connection, runtime: str, artifact: str, config: ModelConfig, term_grace_s: float
) -> None:
    """Entry point of a worker process: load, warm up, then serve requests until told to
    stop. ``term_grace_s``: how long a SIGTERM is deferred (``_defer_sigterm``)."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _defer_sigterm(term_grace_s)
    try:
        model = RuntimeTable.discover().get(runtime).load(Path(artifact), config)
        model.warmup()
        signature = plain_signature(model.signature)
    except Exception as exc:
        conn.send(("load_error", class_path(exc), str(exc)))
        return
    conn.send(("ready", signature))
    request, response = _Attached(), _Attached()
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if msg[0] != "run":
                return
            _serve_one(conn, model, msg, request, response)
    finally:
        request.close()
        response.close()
        with contextlib.suppress(Exception):
            model.close()
