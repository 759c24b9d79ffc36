"""How placement on the cores changes modelport's cost per request: serve one model under
a few named configurations, taken in turn for several rounds (the machine drifts), load
each with ``wrk`` at 64 connections, and print req/s with the CPU time and the context
switches per request of the server and of wrk.

    .venv/bin/python benchmarks/placement.py [--model m1] [--rounds 3] [--seconds 6]
        [--configs pinned,unpinned,unpinned-wrk-batch] [--modelport-args="--workers 2"]

Configurations (server = ``modelport serve MODEL`` with default settings):

- ``pinned``: the server on CPU 0, wrk on CPU 1 (as ``run.py``'s pinned mode);
- ``unpinned``: nothing pinned (as ``run.py``'s unpinned mode);
- ``unpinned-wrk-batch``: unpinned, wrk under ``chrt -b 0`` (SCHED_BATCH: a woken wrk
  never preempts the task running on its core). Not a way to run the benchmark: a
  diagnosis, to tell what wrk's wake-up preemptions cost the server.

Columns: server µs/req is the CPU time (user + system) of the server's process tree per
request; server preempted/req its involuntary context switches per request (summed over
its threads); wrk µs/req and wrk sleeps/req are wrk's rusage (its kernel work on the
loopback included) and its voluntary context switches, i.e. how often it waited for a
response. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cpuload
import models
import pinning
from loadgen import wrk
from servers import RunningServer, free_port, spec_for

CONNECTIONS = 64


@dataclass(frozen=True)
class Where:
    server_prefix: list[str]
    load_prefix: list[str]
    server_cpus: set[int] | None


CONFIGS = {
    "pinned": Where(["taskset", "-c", "0"], ["taskset", "-c", "1"], {0}),
    "unpinned": Where([], [], None),
    "unpinned-wrk-batch": Where([], ["chrt", "-b", "0"], None),
}


@dataclass
class Point:
    config: str
    rps: float
    server_us: float
    wrk_us: float
    preempted: float
    wrk_sleeps: float
    errors: int


def involuntary_switches(root: int) -> int:
    total = 0
    for pid in pinning.descendants(root):
        for tid in pinning.threads(pid):
            try:
                status = (pinning.PROC / str(pid) / "task" / str(tid) / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def measure(name: str, files: models.ModelFiles, extra: list[str], seconds: float) -> Point:
    where = CONFIGS[name]
    port = free_port()
    spec = spec_for("modelport", files, port, extra)
    log = Path(tempfile.mkdtemp(prefix="placement-")) / "server.log"
    server = RunningServer(spec, port, where.server_prefix, log)
    try:
        server.wait_ready()
        server.check_predict()
        wrk(server.url, spec.body, CONNECTIONS, 2, where.load_prefix)  # warm-up
        if where.server_cpus is not None:
            pinning.enforce(server.proc.pid, where.server_cpus)
        cpu_before = cpuload.tree_cpu_s(server.proc.pid)
        switches_before = involuntary_switches(server.proc.pid)
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = wrk(server.url, spec.body, CONNECTIONS, seconds, where.load_prefix)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        n = max(result.requests, 1)
        wrk_s = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
        return Point(
            name,
            result.rps,
            (cpuload.tree_cpu_s(server.proc.pid) - cpu_before) / n * 1e6,
            wrk_s / n * 1e6,
            (involuntary_switches(server.proc.pid) - switches_before) / n,
            (usage.ru_nvcsw - usage_before.ru_nvcsw) / n,
            result.errors,
        )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=("m1", "m2"), default="m1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured, per point")
    parser.add_argument("--configs", default="pinned,unpinned,unpinned-wrk-batch")
    parser.add_argument("--modelport-args", default="", help="extra `modelport serve` flags")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown or not names or args.rounds < 1:
        parser.error(f"--configs: choose from {', '.join(CONFIGS)}; --rounds >= 1")
    files = models.build([args.model])[args.model]
    extra = shlex.split(args.modelport_args)
    points: list[Point] = []
    print(f"{args.model}, {CONNECTIONS} connections, {args.seconds:g} s per point\n")
    print(
        "| round | config | req/s | server µs/req | server preempted/req | wrk µs/req "
        "| wrk sleeps/req | errors |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for round_ in range(1, args.rounds + 1):
        for name in names:
            p = measure(name, files, extra, args.seconds)
            points.append(p)
            print(
                f"| {round_} | {name} | {p.rps:,.0f} | {p.server_us:.1f} | "
                f"{p.preempted:.3f} | {p.wrk_us:.1f} | {p.wrk_sleeps:.3f} | {p.errors} |",
                flush=True,
            )
    print("\n| config | median req/s | / pinned |")
    print("|---|---:|---:|")
    medians = {n: statistics.median(p.rps for p in points if p.config == n) for n in names}
    for name, rps in medians.items():
        ratio = f"{rps / medians['pinned']:.2f}" if "pinned" in medians else "-"
        print(f"| {name} | {rps:,.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
