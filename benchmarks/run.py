"""One command for the whole benchmark: (a) in-process, (b) no-op ASGI, (c) FastAPI, (d) modelport.

    .venv/bin/python benchmarks/run.py [--duration 10] [--warmup 3] [--connections 1,16,64]
        [--modes pinned,unpinned] [--models m1,m2] [--servers noop,fastapi,modelport]
        [--out docs/benchmarks.md] [--quick]

Prints the tables, writes ``benchmarks/results/<timestamp>.json`` and replaces this run's
section of ``docs/benchmarks.md`` (a ``--quick`` run writes the page only with ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import cpuload
import models
import pinning
import report
from loadgen import LoadError, wrk
from models import ModelFiles
from results import HttpRow, InprocRow, Results, targets
from servers import (
    SERVER_ALIASES,
    SERVER_NAMES,
    RunningServer,
    ServerError,
    spec_for,
)

from modelport._process import free_port

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SERVER_CPU, LOAD_CPU = 0, 1
PACKAGES = (
    "numpy",
    "scikit-learn",
    "onnxruntime",
    "onnx",
    "uvicorn",
    "uvloop",
    "httptools",
    "starlette",
    "fastapi",
    "pydantic",
    "granian",
    "modelport",
)


@dataclass(frozen=True)
class Config:
    duration: float
    warmup: float
    connections: list[int]
    modes: list[str]
    models: list[str]
    servers: list[str]
    batches: list[int]
    out: Path | None
    save: bool  # write benchmarks/results/<timestamp>.json (not with --out none)
    label: str
    work: Path
    quick: bool
    quiet_wait: float
    quiet_threshold: float
    modelport_args: list[str]


@dataclass(frozen=True)
class Placement:
    """Where the server and the load generator run in one mode."""

    server_prefix: list[str]
    load_prefix: list[str]
    server_cpus: set[int] | None


def placement(mode: str) -> Placement:
    if mode == "pinned":
        return Placement(
            ["taskset", "-c", str(SERVER_CPU)], ["taskset", "-c", str(LOAD_CPU)], {SERVER_CPU}
        )
    return Placement([], [], None)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _servers(text: str) -> list[str]:
    names: list[str] = []
    for name in _csv(text):
        for real in SERVER_ALIASES.get(name, (name,)):
            if real not in SERVER_NAMES:
                raise SystemExit(f"unknown server {real!r}; choose from {SERVER_NAMES}")
            names.append(real)
    return names


def parse_args(argv: list[str]) -> Config:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per run")
    p.add_argument("--connections", default="1,16,64")
    p.add_argument("--modes", default="pinned,unpinned")
    p.add_argument("--models", default="m1,m2")
    p.add_argument(
        "--servers",
        default="noop,fastapi,modelport",
        help="noop (= noop-uvicorn,noop-granian,noop-modelport), fastapi, modelport",
    )
    p.add_argument("--batches", default="1,8,32,128", help="batch sizes for (a)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="docs page to update, or 'none' (tables on the terminal only, no results "
        "file) [docs/benchmarks.md; none for --quick]",
    )
    p.add_argument("--label", default=None, help="section key in the page [full | quick]")
    p.add_argument("--work", type=Path, default=models.DEFAULT_DIR, help="model files, logs")
    p.add_argument(
        "--modelport-args",
        default="",
        help="extra flags for `modelport serve`, e.g. '--workers 2' [none: defaults]",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: duration 3, warm-up 1")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each run, wait up to this many seconds for other processes "
        "to leave the CPUs [60; 0 with --quick]",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="busy CPUs below which the machine counts as quiet",
    )
    a = p.parse_args(argv)
    terminal_only = a.out is not None and str(a.out) == "none"  # no page, no results file
    out = a.out if a.out is not None or a.quick else REPO / "docs" / "benchmarks.md"
    if terminal_only:
        out = None
    return Config(
        duration=3.0 if a.quick else a.duration,
        warmup=1.0 if a.quick else a.warmup,
        connections=[int(c) for c in _csv(a.connections)],
        modes=_check(_csv(a.modes), ("pinned", "unpinned"), "mode"),
        models=_check(_csv(a.models), tuple(models.BUILDERS), "model"),
        servers=_servers(a.servers),
        batches=[int(b) for b in _csv(a.batches)],
        out=out,
        save=not terminal_only,
        label=a.label or ("quick" if a.quick else "full"),
        work=a.work.resolve(),
        quick=a.quick,
        quiet_wait=a.quiet_wait if a.quiet_wait is not None else (0.0 if a.quick else 60.0),
        quiet_threshold=a.quiet_threshold,
        modelport_args=shlex.split(a.modelport_args),
    )


def _check(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    for v in values:
        if v not in allowed:
            raise SystemExit(f"unknown {what} {v!r}; choose from {allowed}")
    return values


# --- environment ---------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    words = (proc.stdout or proc.stderr).split()
    return words[1] if len(words) > 1 else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _command() -> str:
    python = os.path.relpath(sys.executable, Path.cwd())
    python = sys.executable if python.startswith("..") else python
    return shlex.join([python, *sys.argv])


def environment(cfg: Config, started: dt.datetime) -> dict[str, str]:
    meta = {
        "date": started.isoformat(timespec="seconds"),
        "command": _command(),
        "settings": (
            f"duration {cfg.duration:g} s, warm-up {cfg.warmup:g} s, connections "
            f"{cfg.connections}, modes {cfg.modes}, models {cfg.models}, "
            f"servers {cfg.servers}, modelport flags {shlex.join(cfg.modelport_args) or 'none'}"
        ),
        "cpu": f"{_cpu_model()}, {os.cpu_count()} CPUs visible",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": _wrk_version(),
    }
    versions = ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
    return meta | {"packages": versions}


# --- measurements --------------------------------------------------------------------------


def run_inproc(
    mode: str, model: ModelFiles, cfg: Config, round_: int, plan: bool = False
) -> list[InprocRow]:
    """(a): run inprocess.py in a subprocess placed like the server. ``plan``: the
    scikit-learn model as modelport runs it (its numpy plan), filed as "<key> numpy plan"
    so it never counts as the model's L_model."""
    key = f"{model.key} numpy plan" if plan else model.key
    argv = [
        *placement(mode).server_prefix,
        sys.executable,
        str(BENCH_DIR / "inprocess.py"),
        str(model.model),
        str(model.native_body),
        "--batches",
        ",".join(map(str, cfg.batches)),
    ]
    if cfg.quick:
        argv += ["--seconds", "0.2", "--repeats", "3"]
    if plan:
        argv.append("--plan")
    cpuload.wait_for_quiet(cfg.quiet_threshold, cfg.quiet_wait)
    meter = cpuload.Meter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    background = meter.background_cpus()
    rows = []
    for line in proc.stdout.splitlines():
        raw = json.loads(line)
        rate, per_call = raw["rows_per_s"], raw["us_per_call"]
        rows.append(InprocRow(mode, key, raw["batch"], rate, per_call, background, round=round_))
    if proc.returncode != 0 or not rows:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"rc={proc.returncode}"]
        rows.append(InprocRow(mode, key, 0, error=tail[0], round=round_))
    return rows


def _pin(server: RunningServer, cpus: set[int] | None) -> int:
    return pinning.enforce(server.proc.pid, cpus) if cpus is not None else 0


def _load(server: RunningServer, row: HttpRow, cfg: Config, where: Placement) -> None:
    row.startup_s = server.wait_ready()
    server.check_predict()
    escaped = _pin(server, where.server_cpus)
    if cfg.warmup > 0:
        wrk(server.url, server.spec.body, row.connections, cfg.warmup, where.load_prefix)
    escaped += _pin(server, where.server_cpus)
    meter = cpuload.Meter(server.proc.pid)
    result = wrk(server.url, server.spec.body, row.connections, cfg.duration, where.load_prefix)
    row.background_cpu = meter.background_cpus()
    server_s, load_s = meter.spent()
    if result.requests:
        row.server_cpu_us = server_s / result.requests * 1e6
        row.load_cpu_us = load_s / result.requests * 1e6
    row.rps, row.p50_ms, row.p99_ms = result.rps, result.p50_ms, result.p99_ms
    row.socket_errors, row.non2xx = result.socket_errors, result.non2xx
    row.escaped_threads = escaped
    server.check_predict()


def run_http(mode: str, model: ModelFiles, server_name: str, conns: int, cfg: Config) -> HttpRow:
    """Start one server, warm it up, measure it with wrk, stop it."""
    row = HttpRow(mode, model.key, server_name, conns)
    where = placement(mode)
    log = cfg.work / "logs" / f"{mode}-{model.key}-{server_name}-c{conns}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server: RunningServer | None = None
    cpuload.wait_for_quiet(cfg.quiet_threshold, cfg.quiet_wait)
    try:
        port = free_port()
        server = RunningServer(
            spec_for(server_name, model, port, cfg.modelport_args), port, where.server_prefix, log
        )
        _load(server, row, cfg, where)
    except (ServerError, LoadError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        if server is not None:
            server.stop()
    return row


def _progress(row: HttpRow) -> None:
    if row.error:
        text = f"ERROR {row.error[:200]}"
    else:
        text = (
            f"{row.rps:>9,.0f} req/s  p50 {row.p50_ms:7.2f} ms  p99 {row.p99_ms:7.2f} ms"
            f"  errors {row.errors}  re-pinned {row.escaped_threads}"
            f"  CPU/req server {row.server_cpu_us or 0:.1f} µs, wrk {row.load_cpu_us or 0:.1f} µs"
            f"  background {row.background_cpu or 0:.2f} CPU"
        )
    print(f"  {row.mode:8} {row.model} c={row.connections:<3} {row.server:13} {text}", flush=True)


def _inproc_round(res: Results, mode: str, model: ModelFiles, cfg: Config, round_: int) -> None:
    rows = run_inproc(mode, model, cfg, round_)
    if model.model.suffix == ".joblib":
        rows += run_inproc(mode, model, cfg, round_, plan=True)
    res.inproc += rows
    for r in rows:
        rate = f"{r.rows_per_s:,.0f} rows/s" if r.rows_per_s else f"ERROR {r.error}"
        rate += f"  background {r.background_cpu or 0:.2f} CPU"
        print(f"  {mode:8} {r.model} (a) round {round_} batch {r.batch:<4} {rate}", flush=True)


def measure_all(cfg: Config, files: dict[str, ModelFiles]) -> Results:
    """The interleaved run. Per model: (a) in every mode, then for each connection count
    a block that runs every server in every mode (the modes alternate which goes first,
    the servers rotate) followed by (a) again in every mode. So every block's L_model
    comes from the two (a) rounds around it, and a pinned figure and its unpinned
    counterpart are minutes apart, not half a run: the unpinned / pinned ratio then
    compares the machine with itself rather than with how fast it was ten minutes ago."""
    res = Results([], [])
    turns = dict.fromkeys(cfg.modes, 0)  # blocks run so far in each mode: the rotation
    for key in cfg.models:
        for mode in cfg.modes:
            _inproc_round(res, mode, files[key], cfg, 0)
        for i, conns in enumerate(cfg.connections):
            modes = cfg.modes if i % 2 == 0 else cfg.modes[::-1]
            for mode in modes:
                shift = turns[mode] % len(cfg.servers)
                turns[mode] += 1
                for name in cfg.servers[shift:] + cfg.servers[:shift]:
                    row = run_http(mode, files[key], name, conns, cfg)
                    row.block = i
                    res.http.append(row)
                    _progress(row)
            for mode in cfg.modes:
                _inproc_round(res, mode, files[key], cfg, i + 1)
    return res


# --- output --------------------------------------------------------------------------------


def save_json(
    cfg: Config,
    meta: dict[str, str],
    res: Results,
    text_targets: list[dict[str, object]],
    started: dt.datetime,
) -> Path:
    suffix = "-quick" if cfg.quick else ""
    path = BENCH_DIR / "results" / f"{started:%Y%m%d-%H%M%S}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    ratios = [
        {"mode": m, "model": k, "connections": c, **res.ratios(m, k, c)}
        for m in cfg.modes
        for k in cfg.models
        for c in cfg.connections
    ]
    payload = {
        "meta": meta,
        "inproc": [asdict(r) for r in res.inproc],
        "http": [asdict(r) for r in res.http],
        "ratios": ratios,
        "targets": text_targets,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def main(argv: list[str]) -> int:
    cfg = parse_args(argv)
    started = dt.datetime.now().astimezone()
    files = models.build(cfg.models, cfg.work)
    meta = environment(cfg, started)
    runs = len(cfg.modes) * len(cfg.models) * len(cfg.servers) * len(cfg.connections)
    rounds = len(cfg.modes) * len(cfg.models) * (len(cfg.connections) + 1)
    per_round = 1.5 + len(cfg.batches) * (0.7 if cfg.quick else 2.2)  # see run_inproc
    estimate = (runs * (cfg.warmup + cfg.duration + 3) + rounds * per_round) / 60
    print(
        f"modelport benchmark: {runs} HTTP runs and {rounds} in-process rounds,"
        f" about {estimate:.0f} min",
        flush=True,
    )
    t0 = time.monotonic()
    res = measure_all(cfg, files)
    checks = targets(res, cfg.modes, cfg.models, cfg.connections)
    text = report.section(cfg.label, meta, res, cfg.modes, cfg.models, cfg.connections, checks)
    print("\n" + text)
    if not cfg.save:  # --out none: the tables on the terminal, no files
        print(f"({time.monotonic() - t0:.0f} s; --out none: no results file written)")
        return 0
    checks_json = [asdict(t) | {"verdict": t.verdict} for t in checks]
    path = save_json(cfg, meta, res, checks_json, started)
    print(f"results: {path.relative_to(REPO)}  ({time.monotonic() - t0:.0f} s)")
    if cfg.out is not None:
        report.write_doc(cfg.out, cfg.label, text)
        print(f"page: {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
