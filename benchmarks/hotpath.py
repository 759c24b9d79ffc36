"""Where does a modelport request's CPU time go? Serve one model pinned to CPU 0, load it
from CPU 1, measure the server's CPU time per request, then sample it with py-spy and
split the samples by layer (innermost matching frame wins).

    .venv/bin/python benchmarks/hotpath.py [--model m1] [--connections 64] [--seconds 10]
        [--modelport-args="--workers 1"] [--top 15] [--json FILE]

Prints two markdown tables (layers; hottest functions by own time). The py-spy window is
separate from the CPU-time window, so the sampler's own cost does not skew µs/request.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cpuload
import models
import pinning
from loadgen import wrk
from servers import RunningServer, spec_for

from modelport._process import free_port

SERVER_CPU, LOAD_CPU = 0, 1

# (layer, pattern on a "function (file:line)" frame). A sample belongs to the innermost
# frame that matches any rule; frames matching nothing (asyncio, stdlib) fall through to
# their callers, and a sample with no match at all is "event loop / other".
LAYERS: list[tuple[str, re.Pattern[str]]] = [
    ("model predict (runtime + framework)", re.compile(r"sklearn/|onnxruntime/|joblib/|scipy/")),
    ("modelport runtime adapter", re.compile(r"modelport/core/runtimes/")),
    ("JSON decode/validate/encode (codec)", re.compile(r"modelport/api/codecs/|orjson")),
    ("batcher + executor", re.compile(r"modelport/core/(batching|executors)")),
    ("inference service", re.compile(r"modelport/core/(service|registry)")),
    ("security gate (auth, limits, metering)", re.compile(r"modelport/(api/security|policy/)")),
    ("edge: request id, body limit, headers", re.compile(r"modelport/api/(middleware|hardening)")),
    ("predict fast path (routing, framing)", re.compile(r"modelport/api/fastpath")),
    ("logging / metrics", re.compile(r"modelport/observe/|logging/|prometheus_client/")),
    (
        "HTTP transport (protocol, uvicorn, httptools)",
        re.compile(r"modelport/api/(protocol|_cycle|_timers)|uvicorn/|httptools/"),
    ),
]
OTHER = "event loop / other"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def classify(stack: list[str]) -> str:
    for frame in reversed(stack):
        for layer, pattern in LAYERS:
            if pattern.search(frame):
                return layer
    return OTHER


def short(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            frames = [f for f in frames if not f.startswith("thread ")]
            samples.append((frames, int(count)))
    return samples


def _batch_stats(server: RunningServer, name: str) -> dict[str, float]:
    """The served version's batch counters (``GET /v1/models/{name}``)."""
    status, body = server.request("GET", f"/v1/models/{name}", None)
    if status != 200:
        return {}
    ready = [v for v in json.loads(body)["versions"] if "batching" in v]
    return dict(ready[0]["batching"]["stats"]) if ready else {}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["m1", "m2"], default="m1")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--modelport-args", default="", help="extra flags for modelport serve")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    model = models.build([args.model])[args.model]
    port = free_port()
    spec = spec_for("modelport", model, port, shlex.split(args.modelport_args))
    log = Path(tempfile.mkstemp(prefix="profile-", suffix=".log")[1])
    server = RunningServer(spec, port, ["taskset", "-c", str(SERVER_CPU)], log)
    load_cpu = ["taskset", "-c", str(LOAD_CPU)]
    try:
        server.wait_ready()
        server.check_predict()
        pinning.enforce(server.proc.pid, {SERVER_CPU})
        wrk(server.url, spec.body, args.connections, args.warmup, load_cpu)

        stats0 = _batch_stats(server, model.stem)
        cpu0 = cpuload.tree_cpu_s(server.proc.pid)
        load = wrk(server.url, spec.body, args.connections, args.seconds, load_cpu)
        cpu_s = cpuload.tree_cpu_s(server.proc.pid) - cpu0
        stats1 = _batch_stats(server, model.stem)
        batches = stats1.get("batches", 0) - stats0.get("batches", 0)
        mean_batch = (stats1.get("rows", 0) - stats0.get("rows", 0)) / batches if batches else 0.0
        us_per_request = cpu_s / load.requests * 1e6 if load.requests else float("nan")

        raw = Path(tempfile.mkstemp(prefix="profile-", suffix=".txt")[1])
        spy = subprocess.Popen(
            [
                *load_cpu,
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(server.proc.pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(args.rate),
                "--duration",
                str(round(args.seconds)),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        wrk(server.url, spec.body, args.connections, args.seconds, load_cpu)
        _, err = spy.communicate(timeout=args.seconds + 60)
        if spy.returncode != 0:
            print(f"py-spy failed: {err.strip()[-400:]}", file=sys.stderr)
            return 1
        samples = parse_collapsed(raw.read_text())
    finally:
        server.stop()

    total = sum(n for _, n in samples) or 1
    by_layer: collections.Counter[str] = collections.Counter()
    by_func: collections.Counter[str] = collections.Counter()
    for stack, n in samples:
        by_layer[classify(stack)] += n
        if stack:
            by_func[short(stack[-1])] += n

    print(
        f"\nmodelport, {args.model}, pinned, {args.connections} connections: "
        f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms; "
        f"server CPU {us_per_request:.0f} µs/request; mean batch {mean_batch:.1f} rows; "
        f"{total:,} py-spy samples\n"
    )
    print("| layer (innermost frame) | share | µs/request |\n|---|---|---|")
    for layer, n in by_layer.most_common():
        print(f"| {layer} | {n / total:.0%} | {n / total * us_per_request:.0f} |")
    print("\n| hottest functions (own time) | share |\n|---|---|")
    for func, n in by_func.most_common(args.top):
        print(f"| `{func}` | {n / total:.1%} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "model": args.model,
                    "connections": args.connections,
                    "rps": load.rps,
                    "p50_ms": load.p50_ms,
                    "p99_ms": load.p99_ms,
                    "cpu_us_per_request": us_per_request,
                    "mean_batch_rows": mean_batch,
                    "layers": {k: v / total for k, v in by_layer.items()},
                    "functions": {k: v / total for k, v in by_func.most_common(50)},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
