"""The parent's reading of what a model worker sends: whole frames, an allow-listed
unpickler, and checks on the output slots before shared memory is read through them.

A worker runs the model's code, so its bytes are not trusted: plain ``pickle`` would call
whatever the bytes name (code execution in the server), an object dtype in a slot would make
the server read raw shared memory as object pointers (a segfault), and a ``recv()`` on a
frame the worker never finishes would block the event loop. Here frames are cut from bytes
already read (no blocking), their size is capped, and decoding is a separate step whose
failure the caller turns into an error for one exchange.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from typing import Any, TypeGuard

import numpy as np

from modelport.core._process_worker import Message, Slot

MAX_FRAME_BYTES = 256 << 20  # object-dtype outputs travel in the message; tensors never do
MAX_RESPONSE_BYTES = 16 << 30  # the most a worker may ask the response buffer to grow to

# What a worker's messages legitimately name: numpy's array and scalar reconstruction (for
# object and structured outputs, pickled inline) and the few builtins pickle cannot write
# as opcodes. numpy refuses raw bytes for object dtypes on unpickling, so these are safe.
_ALLOWED = frozenset(
    {("builtins", name) for name in ("complex", "set", "frozenset", "bytearray")}
    | {
        (module, name)
        for module in ("numpy._core.multiarray", "numpy.core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(module, "_frombuffer") for module in ("numpy._core.numeric", "numpy.core.numeric")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
)
_RAW_KINDS = frozenset("biufcSUMmV")  # dtypes whose bytes are plain values, never pointers


class BadFrame(Exception):
    """The worker broke the protocol (a frame too large, a malformed message or slot)."""


class FrameReader:
    """Cuts the bytes read from a worker's pipe into the frames ``Connection.send_bytes``
    wrote (a 4-byte big-endian length, or -1 and an 8-byte length, then the payload)."""

    def __init__(self, limit: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._limit = limit
        self.missing = 0  # bytes the frame being read still lacks (0: unknown or none)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the frames now complete. Raises ``BadFrame`` on a header
        announcing more than the limit, before any of it is buffered."""
        self._buf += data
        frames: list[bytes] = []
        while True:
            header = self._header()
            if header is None:
                return frames
            start, size = header
            if len(self._buf) < start + size:
                self.missing = start + size - len(self._buf)
                return frames
            self.missing = 0
            frames.append(bytes(self._buf[start : start + size]))
            del self._buf[: start + size]

    def _header(self) -> tuple[int, int] | None:
        if len(self._buf) < 4:
            return None
        (size,) = struct.unpack_from("!i", self._buf)
        start = 4
        if size == -1:
            if len(self._buf) < 12:
                return None
            (size,) = struct.unpack_from("!Q", self._buf, 4)
            start = 12
        if size < 0 or size > self._limit:
            raise BadFrame(f"it sent a message of {size} bytes (the limit is {self._limit})")
        return start, size


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} may not cross from a model worker")


def decode(frame: bytes) -> Message:
    """Unpickle one frame with the allow-list; raises on anything else or a non-message."""
    msg = _Unpickler(io.BytesIO(frame)).load()
    if not isinstance(msg, tuple) or not msg or not isinstance(msg[0], str):
        raise pickle.UnpicklingError("a worker message is a tuple starting with its kind")
    return msg


def _is_count(value: object) -> TypeGuard[int | np.integer[Any]]:
    return bool(isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 0)


def checked_slots(raw: object, capacity: int) -> tuple[list[Slot], int]:
    """The worker's output slots, once each is known to lie within ``capacity`` bytes and
    to hold plain values, and the bytes of the buffer they use (where the last one ends);
    raises ``BadFrame`` otherwise."""
    if not isinstance(raw, list):
        raise BadFrame("its output slots are not a list")
    slots, used = [], 0
    for item in raw:
        slot, end = _checked_slot(item, capacity)
        slots.append(slot)
        used = max(used, end)
    return slots, used


def _checked_slot(slot: object, capacity: int) -> tuple[Slot, int]:
    if not isinstance(slot, tuple) or len(slot) != 4 or not isinstance(slot[0], str):
        raise BadFrame("an output slot is not (name, dtype, shape, offset)")
    name, dtype_str, shape, offset = slot
    if dtype_str is None:  # pickled inline, and unpickled through the allow-list
        if not isinstance(shape, np.ndarray):
            raise BadFrame(f"output {name!r} is neither in shared memory nor an array")
        return slot, 0
    try:
        dtype = np.dtype(dtype_str)
    except (TypeError, ValueError):
        raise BadFrame(f"output {name!r} has an unknown dtype") from None
    if dtype.kind not in _RAW_KINDS or dtype.hasobject:
        raise BadFrame(f"output {name!r} has dtype {dtype} in shared memory")
    if not isinstance(shape, tuple) or not all(_is_count(n) for n in shape):
        raise BadFrame(f"output {name!r} has a malformed shape")
    if not _is_count(offset):
        raise BadFrame(f"output {name!r} has a malformed offset")
    end = int(offset) + math.prod(int(n) for n in shape) * dtype.itemsize
    if end > capacity:
        raise BadFrame(f"output {name!r} ends past the response buffer")
    return (name, dtype_str, tuple(int(n) for n in shape), int(offset)), end


def checked_growth(raw: object) -> int:
    """The response size a ``("grow", n)`` asks for, within ``MAX_RESPONSE_BYTES``."""
    if not _is_count(raw) or not 0 < int(raw) <= MAX_RESPONSE_BYTES:
        raise BadFrame(f"it asked for a response buffer of {raw!r} bytes")
    return int(raw)
