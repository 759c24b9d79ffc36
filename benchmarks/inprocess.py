"""(a) In-process limit: call the model directly at several batch sizes and print rows/s.

Usage: ``python benchmarks/inprocess.py MODEL_FILE BODY_FILE [--batches 1,8,32,128] [--plan]``.
``--plan``: a scikit-learn model as modelport runs it (``core/runtimes/_linear.py``: the same
arithmetic as numpy, without scikit-learn's per-call checks) instead of ``predict_proba``.
Run it under ``taskset`` to pin it; every thread is then held to the starting CPU set
(see ``pinning.enforce``), and onnxruntime gets one intra-op thread per allowed CPU.
Prints one JSON object per batch size: ``{"batch", "rows_per_s", "us_per_call", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pinning import enforce

Predict = Callable[[np.ndarray], object]


def load(model: Path, n_cpus: int, plan: bool = False) -> tuple[Predict, np.dtype]:
    """Return a batch predict function and the input dtype the model takes."""
    if model.suffix == ".onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = n_cpus
        session = ort.InferenceSession(str(model), options)
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})), np.dtype(np.float32)
    import joblib

    estimator = joblib.load(model)
    if plan:
        from modelport.core.runtimes._linear import LinearPlan, compile_linear

        compiled = compile_linear(estimator, "predict_proba", estimator.n_features_in_)
        if not isinstance(compiled, LinearPlan):
            raise SystemExit(f"no numpy plan for {model.name}: {compiled}")
        return compiled.run, np.dtype(np.float64)
    return estimator.predict_proba, np.dtype(np.float64)


def time_loop(predict: Predict, x: np.ndarray, seconds: float) -> float:
    """Call ``predict(x)`` repeatedly for about ``seconds``; return rows per second."""
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        predict(x)
        calls += 1
        now = time.perf_counter()
    return calls * len(x) / (now - start)


def measure(
    predict: Predict, row: np.ndarray, batch: int, seconds: float, repeats: int
) -> dict[str, float]:
    x = np.ascontiguousarray(np.repeat(row[None, :], batch, axis=0))
    time_loop(predict, x, seconds / 2)  # warm-up
    rates = [time_loop(predict, x, seconds) for _ in range(repeats)]
    best = statistics.median(rates)
    return {
        "batch": batch,
        "rows_per_s": best,
        "us_per_call": batch / best * 1e6,
        "min_rows_per_s": min(rates),
        "max_rows_per_s": max(rates),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("body", type=Path, help="native JSON body {'inputs': [[...]]}")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one timed loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per batch size")
    parser.add_argument("--plan", action="store_true", help="modelport's numpy plan (sklearn)")
    args = parser.parse_args()
    cpus = os.sched_getaffinity(0)
    predict, dtype = load(args.model, len(cpus), args.plan)
    escaped = enforce(os.getpid(), cpus)
    row = np.asarray(json.loads(args.body.read_text())["inputs"][0], dtype=dtype)
    for batch in (int(b) for b in args.batches.split(",")):
        result = measure(predict, row, batch, args.seconds, args.repeats)
        result |= {"cpus": len(cpus), "escaped_threads": escaped}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
