"""What a second copy of a model's weights costs: M2 called in-process on one core, from
one onnxruntime session, then from two sessions of the same file taken in turn (what two
HTTP workers, each with its own copy, do to the cache they share).

    taskset -c 0 .venv/bin/python benchmarks/weight_copies.py [--batches 32,64] [--seconds 3]

Prints rows/s per batch size for one session and for two in turn, measured one after the
other and then once more for one session (the machine drifts), and the ratio of two to
the mean of the one-session figures. One onnxruntime thread per session, as each of
``modelport serve``'s workers has on a 2-core machine. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import models
import numpy as np

if TYPE_CHECKING:
    from onnxruntime import InferenceSession


def _session(path: str) -> InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def rows_per_s(sessions: list[InferenceSession], batch: np.ndarray, seconds: float) -> float:
    name = sessions[0].get_inputs()[0].name
    feeds = {name: batch}
    for session in sessions:
        session.run(None, feeds)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sessions[calls % len(sessions)].run(None, feeds)
        calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="32,64", help="comma-separated batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    path = str(models.build(["m2"])["m2"].model)
    one, other = _session(path), _session(path)
    rng = np.random.default_rng(0)
    print("| batch | one session, rows/s | two in turn, rows/s | one again, rows/s | two / one |")
    print("|---:|---:|---:|---:|---:|")
    for size in (int(b) for b in args.batches.split(",")):
        batch = rng.standard_normal((size, 256)).astype(np.float32)
        first = rows_per_s([one], batch, args.seconds)
        turns = rows_per_s([one, other], batch, args.seconds)
        again = rows_per_s([one], batch, args.seconds)
        ratio = turns / ((first + again) / 2)
        print(f"| {size} | {first:,.0f} | {turns:,.0f} | {again:,.0f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
