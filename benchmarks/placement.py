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
  does not preempt the task running on its core, which keeps it until its time slice
  ends or it sleeps). Not a way to run the benchmark: a diagnosis, to tell what wrk's
  wake-up preemptions cost.

Each round takes the configurations in turn, each round starting one further along, and
every point starts a fresh server. A point that fails (the server does not start or
dies, a server process ends during the measurement, wrk fails) or sees errors is shown
with its reason and left out of the medians, and the exit status is then 1.

Columns: server µs/req is the CPU time (user + system) of the server's process tree per
request; server preempted/req its involuntary context switches per request (summed over
its threads, of the threads alive at the end: a thread that exits during the window takes
its count along); wrk µs/req and wrk sleeps/req are wrk's rusage (its kernel work on the
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
from loadgen import LoadError, wrk
from run import Placement, placement
from servers import RunningServer, ServerError, spec_for

from modelport._process import free_port

CONNECTIONS = 64

# run.py's two modes, and its unpinned one with wrk under SCHED_BATCH
CONFIGS = {
    "pinned": placement("pinned"),
    "unpinned": placement("unpinned"),
    "unpinned-wrk-batch": Placement([], ["chrt", "-b", "0"], None),
}


@dataclass
class Point:
    config: str
    rps: float = 0.0
    server_us: float = 0.0
    wrk_us: float = 0.0
    preempted: float = 0.0
    wrk_sleeps: float = 0.0
    errors: int = 0
    repinned: int = 0
    failed: str = ""  # why this point has no figures; it is left out of the medians


def involuntary_switches(pids: list[int]) -> int:
    """Involuntary context switches of every thread of ``pids`` (alive ones)."""
    total = 0
    for pid in pids:
        for tid in pinning.threads(pid):
            try:
                status = (pinning.PROC / str(pid) / "task" / str(tid) / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def _load(server: RunningServer, where: Placement, seconds: float) -> Point:
    root = server.proc.pid
    server.wait_ready()
    server.check_predict()
    wrk(server.url, server.spec.body, CONNECTIONS, 2, where.load_prefix)  # warm-up
    repinned = pinning.enforce(root, where.server_cpus) if where.server_cpus else 0
    tree = sorted(pinning.descendants(root))
    switches_before = involuntary_switches(tree)
    sleeps_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw
    meter = cpuload.Meter(root)  # CPU time of the server's tree and of wrk, as run.py's
    result = wrk(server.url, server.spec.body, CONNECTIONS, seconds, where.load_prefix)
    server_s, wrk_s = meter.spent()
    sleeps = resource.getrusage(resource.RUSAGE_CHILDREN).ru_nvcsw - sleeps_before
    switches = involuntary_switches(tree) - switches_before
    if sorted(pinning.descendants(root)) != tree:
        # a process that ended took its CPU time and switches out of the sums
        raise ServerError("a server process ended or restarted during the measurement")
    server.check_predict()
    n = max(result.requests, 1)
    return Point(
        "",
        result.rps,
        server_s / n * 1e6,
        wrk_s / n * 1e6,
        switches / n,
        sleeps / n,
        result.errors,
        repinned,
    )


def measure(name: str, files: models.ModelFiles, extra: list[str], seconds: float) -> Point:
    """One point: a fresh server under configuration ``name``, warmed up, then measured.
    A point that fails says why instead of stopping the run."""
    where = CONFIGS[name]
    port = free_port()
    spec = spec_for("modelport", files, port, extra)
    with tempfile.TemporaryDirectory(prefix="placement-") as logs:
        server = None
        try:
            server = RunningServer(spec, port, where.server_prefix, Path(logs) / "server.log")
            point = _load(server, where, seconds)
        except (LoadError, ServerError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}"
            if server is not None and not isinstance(exc, ServerError):  # it has the log
                why += f" (server log: {server.last_lines(3)})"
            return Point(name, failed=why.replace("|", "/"))
        finally:
            if server is not None:
                server.stop()
    point.config = name
    return point


def order(names: list[str], round_: int) -> list[str]:
    """The configurations of one round: each round starts one further along, so drift
    does not always favour the same one."""
    shift = (round_ - 1) % len(names)
    return names[shift:] + names[:shift]


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
    if not names or any(c not in CONFIGS for c in names):
        parser.error(f"--configs: choose from {', '.join(CONFIGS)}")
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    files = models.build([args.model])[args.model]
    extra = shlex.split(args.modelport_args)
    points: list[Point] = []
    print(f"{args.model}, {CONNECTIONS} connections, {args.seconds:g} s per point\n")
    print(
        "| round | config | req/s | server µs/req | server preempted/req | wrk µs/req "
        "| wrk sleeps/req | errors | note |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for round_ in range(1, args.rounds + 1):
        for name in order(names, round_):
            p = measure(name, files, extra, args.seconds)
            points.append(p)
            if p.failed:
                print(f"| {round_} | {name} | - | - | - | - | - | - | {p.failed} |", flush=True)
                continue
            note = f"{p.repinned} thread(s) re-pinned" if p.repinned else ""
            print(
                f"| {round_} | {name} | {p.rps:,.0f} | {p.server_us:.1f} | "
                f"{p.preempted:.3f} | {p.wrk_us:.1f} | {p.wrk_sleeps:.3f} | {p.errors} | "
                f"{note} |",
                flush=True,
            )
    # a point with errors or none measured says nothing about placement
    good = [p for p in points if not p.failed and not p.errors]
    medians = {
        n: statistics.median(p.rps for p in good if p.config == n)
        for n in names
        if any(p.config == n for p in good)
    }
    print("\n| config | points | median req/s | / pinned |")
    print("|---|---:|---:|---:|")
    for name in names:
        count = sum(p.config == name for p in good)
        if name not in medians:
            print(f"| {name} | 0 | - | - |")
            continue
        ratio = f"{medians[name] / medians['pinned']:.2f}" if "pinned" in medians else "-"
        print(f"| {name} | {count} | {medians[name]:,.0f} | {ratio} |")
    return 0 if len(good) == len(points) else 1


if __name__ == "__main__":
    raise SystemExit(main())
