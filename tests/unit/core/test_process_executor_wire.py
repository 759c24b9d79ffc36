"""What the parent accepts from a worker: whole frames, an allow-listed unpickler, and
output slots that hold plain values inside the response buffer."""

from __future__ import annotations

import asyncio
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.core._process_worker import layout
from modelport.core._wire import (
    BadFrame,
    FrameReader,
    checked_growth,
    checked_slots,
    decode,
)
from modelport.core.process_executor import ProcessExecutor
from modelport.core.runtime import ModelConfig
from modelport.errors import ModelFailed, WorkerFailed
from tests.unit.core._process_helpers import ONES

SIGNATURE = """
    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]}
"""

# x[0, 0] == 7: an object output of a class defined in model.py; 8: a slot claiming object
# dtype (after the real outputs were written); 9: a frame that never ends; 10: asks to grow
# past the cap. Any other value: y = 2x.
# The worker's connection is reached through the frame that called predict, so that the
# model can break the protocol the way a hostile or buggy one could.
HOSTILE = (
    """
import inspect, os, struct, time
import numpy as np

class Tag:
    pass

def sabotage(kind):
    frame = inspect.currentframe()
    while "conn" not in frame.f_locals:
        frame = frame.f_back
    conn = frame.f_locals["conn"]
    if kind == 8:
        conn.send(("ok", [("y", "|O", (1, 3), 0)]))
    elif kind == 9:
        os.write(conn.fileno(), struct.pack("!i", 100) + b"abc")
    elif kind == 10:
        conn.send(("grow", 1 << 60))
    time.sleep(20)

class Model:"""
    + SIGNATURE
    + """
    def load(self, path):
        pass

    def predict(self, inputs):
        x = inputs["x"]
        out = {"y": x * 2}
        first = int(x.flat[0])
        if first == 7:
            out["tag"] = np.array([Tag() for _ in range(len(x))], dtype=object)
        if first in (8, 9, 10):
            sabotage(first)
        return out
"""
)


def executor_for(folder: Path) -> ProcessExecutor:
    (folder / "model.py").write_text(HOSTILE)
    return ProcessExecutor("python", folder / "model.py", ModelConfig(), stop_timeout_s=0.5)


def value(x: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), x, dtype=np.float32)}


# ── pure pieces ──────────────────────────────────────────────────────────────────────────
def frame(payload: bytes) -> bytes:
    return struct.pack("!i", len(payload)) + payload


def test_frames_are_cut_only_when_whole_and_capped() -> None:
    reader = FrameReader(limit=10)
    data = frame(b"abc") + frame(b"0123456789")
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:9]) == [b"abc"]
    assert reader.feed(data[9:13]) == []
    assert reader.missing == 8  # the next frame's header is in: read the rest at once
    assert reader.feed(data[13:]) == [b"0123456789"] and reader.missing == 0
    with pytest.raises(BadFrame, match="11 bytes"):
        FrameReader(limit=10).feed(struct.pack("!i", 11))
    with pytest.raises(BadFrame):
        FrameReader(limit=10).feed(struct.pack("!i", -1) + struct.pack("!Q", 1 << 40))


def test_decode_allows_numpy_outputs_and_refuses_other_globals() -> None:
    arrays = {
        "objects": np.array([{"n": 1}, None, 1 + 2j, np.float64(2.5), {1}], dtype=object),
        "records": np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
    }
    slots, _ = layout(arrays)
    msg = decode(pickle.dumps(("ok", slots), protocol=5))
    assert msg[0] == "ok" and msg[1][0][2].tolist() == arrays["objects"].tolist()
    assert msg[1][1][2].tolist() == arrays["records"].tolist()

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.print"):
        decode(pickle.dumps(("ok", [("x", None, Evil(), 0)])))
    with pytest.raises(pickle.UnpicklingError):
        decode(pickle.dumps(["ok"]))


@pytest.mark.parametrize(
    "slot",
    [
        ("y", "|O", (1,), 0),
        ("y", [("a", "O")], (1,), 0),
        ("y", "f4,O", (1,), 0),
        ("y", "<f8", (-1,), 0),
        ("y", "<f8", [2], 0),
        ("y", "<f8", (2,), -8),
        ("y", "<f8", (9,), 0),
        ("y", "<f8", (1,), 60),
        ("y", "nonsense", (1,), 0),
        ("y", None, [1, 2], 0),
        ("y", "<f8", (1,)),
    ],
)
def test_output_slots_outside_the_buffer_or_holding_pointers_are_refused(slot: object) -> None:
    with pytest.raises(BadFrame):
        checked_slots([slot], capacity=64)


def test_plain_output_slots_pass() -> None:
    slots = [("y", "<f8", (2, 4), 0), ("s", "<U3", (0,), 64), ("o", None, np.array([1]), 0)]
    assert checked_slots(slots, capacity=128) == (slots, 64)  # where the last one ends
    assert checked_growth(1 << 20) == 1 << 20
    for bad in (0, -1, 1 << 60, "10", True, 2.0):
        with pytest.raises(BadFrame):
            checked_growth(bad)


# ── real worker processes ────────────────────────────────────────────────────────────────
def test_an_unreadable_reply_fails_its_call_and_the_worker_serves_on(tmp_path: Path) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        pid = executor.pids[0]
        with pytest.raises(ModelFailed, match="cannot read"):
            await asyncio.wait_for(executor.run(value(7)), 10)
        out = await asyncio.wait_for(executor.run(ONES), 10)
        assert out["y"].tolist() == [[2, 2, 2]] and executor.pids == [pid]
        await executor.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("trigger", "reason"),
    [(8, "dtype object"), (9, None), (10, "response buffer of")],
)
def test_a_worker_breaking_the_protocol_is_killed_and_replaced(
    tmp_path: Path, trigger: int, reason: str | None
) -> None:
    async def main() -> None:
        executor = executor_for(tmp_path)
        await executor.start()
        pid = executor.pids[0]
        call = asyncio.create_task(executor.run(value(trigger)))
        if reason is None:  # a partial frame: the loop must stay free, the call pending
            began = time.monotonic()
            await asyncio.sleep(0.5)
            assert time.monotonic() - began < 2 and not call.done()
            await executor.close()
            with pytest.raises(WorkerFailed):
                await call
            return
        with pytest.raises(WorkerFailed, match=reason):
            await asyncio.wait_for(call, 10)
        out = await asyncio.wait_for(executor.run(ONES), 20)
        assert out["y"].tolist() == [[2, 2, 2]] and executor.pids != [pid]
        await executor.close()

    asyncio.run(main())
