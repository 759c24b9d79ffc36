"""The composition root: settings in, wired services out. The only wiring code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from modelport.api.security import build_gate  # security (issue 4)
from modelport.api.services import Services
from modelport.clock import MonotonicClock
from modelport.core import repository
from modelport.core.busy import BusyBoard
from modelport.core.discovery import RuntimeTable
from modelport.core.registry import ExecutorFactory, Registry
from modelport.core.runtime import Isolation
from modelport.core.service import InferenceService
from modelport.settings import Settings


def model_sources(settings: Settings, demo_repository: Path | None) -> list[repository.ModelSource]:
    sources: list[repository.ModelSource] = []
    if settings.models:
        sources += repository.from_files(settings.models)
    if settings.repository is not None:
        sources += repository.from_repository(settings.repository)
    if demo_repository is not None:
        sources += repository.from_repository(demo_repository)
    return sources


def _process_factory(settings: Settings) -> ExecutorFactory | None:
    try:
        from modelport.core.process_executor import process_executor_factory
    except ImportError:  # pragma: no cover - module always ships; guard for partial installs
        return None
    factory: ExecutorFactory = process_executor_factory(
        settings.executors.process_workers,
        stop_timeout_s=settings.server.drain_timeout_s,
        load_timeout_s=settings.executors.load_timeout_s,
        term_grace_s=settings.server.longest_stop_s,
    )
    return factory


def build(
    settings: Settings, *, demo_repository: Path | None = None, board: BusyBoard | None = None
) -> Services:
    """Wire every component from ``settings``. Does no model I/O (that happens at start-up).
    ``board``: the HTTP workers' shared busy board (``--workers N``)."""
    clock = MonotonicClock()
    # processes x runtime threads = cores: N HTTP workers split the cores between them
    cores = usable_cores()
    cpu_share = max(1, cores // settings.server.worker_count)
    threads = settings.executors.runtime_threads or cpu_share
    # a one-row batch may use every core while the other workers are idle
    lend = board is not None and settings.executors.lend_idle_cores and threads < cores
    registry = Registry(
        RuntimeTable.discover(),
        settings.batching,
        settings.executors,
        clock,
        process_factory=_process_factory(settings),
        runtime_threads=threads,
        cpu_share=cpu_share,
        board=board if lend else None,
        lone_threads=cores if lend else None,
        drain_grace_s=settings.server.drain_timeout_s,
    )
    registry.add_sources(model_sources(settings, demo_repository))
    service = InferenceService(
        registry,
        clock,
        default_timeout_s=settings.server.request_timeout_s,
        max_request_rows=settings.batching.max_request_rows,
    )
    services = Services(settings=settings, registry=registry, service=service)
    # security (issue 4): keys/JWT, scopes, allow-lists, rate limits, quotas, usage metering
    gate = build_gate(settings)
    services.security = gate
    services.startup.append(gate.start)  # the usage flush loop
    services.shutdown.append(gate.stop)  # flushes usage and last-used times, closes stores
    return services


# ── how many HTTP processes (``server.workers: auto``) ─────────────────────────────────────
AUTO_MAX_WORKERS = 8
AUTO_MAX_MODEL_BYTES = 256 * 1024 * 1024  # on disk, all models; each worker loads a copy


@dataclass(frozen=True)
class WorkerPlan:
    count: int
    reason: str


def usable_cores() -> int:
    """Cores this process may run on (taskset and cgroup affinity respected)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _size_on_disk(path: Path, runtime: str) -> int:
    if path.is_file():
        if runtime == "onnx":  # its weights may live in files beside it
            from modelport.core.runtimes.onnx import footprint

            try:
                return footprint(path)
            except OSError:  # unreadable: loading it will say why
                return path.stat().st_size
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def plan_workers(settings: Settings, registry: Registry, cores: int | None = None) -> WorkerPlan:
    """How many HTTP worker processes to run, and why.

    One process runs one event loop, so the request path (HTTP, JSON, validation, and the
    model itself for GIL-holding runtimes) uses one core; N processes on N cores serve
    ~N times as much (docs/benchmarks.md, unpinned). The cost is a copy of every model per
    process, and per-process state. So ``auto`` runs one worker per usable core unless:
    there is one core; a model runs with ``isolation: process`` (its worker pool would be
    multiplied); the models are large on disk (a copy each); or rate limits, quotas or
    keys would be counted or kept per process (auth or limits on without Redis, or the
    ``memory:`` state store). A number in ``server.workers`` is taken as given.
    """
    wanted = settings.server.workers
    if isinstance(wanted, int):
        return WorkerPlan(wanted, "as configured")
    cores = usable_cores() if cores is None else cores
    if cores < 2:
        return WorkerPlan(1, "one usable core")
    served = registry.served()
    if any(config.isolation is Isolation.PROCESS for config, _ in served):
        return WorkerPlan(1, "a model uses isolation: process, whose worker pool is per server")
    size = sum(_size_on_disk(v.artifact, v.runtime) for _, v in served)
    if size > AUTO_MAX_MODEL_BYTES:
        return WorkerPlan(
            1, f"the models take {size / 2**20:,.0f} MiB and each worker would load a copy"
        )
    limits = settings.limits
    limited = settings.auth.enabled or any(
        (limits.default_rate, limits.anonymous_rate, limits.default_quota)
    )
    if settings.state.redis_url is None and limited:
        return WorkerPlan(1, "rate limits and quotas would be counted per process (set --redis)")
    if (settings.state.url or "").startswith("memory:"):
        return WorkerPlan(1, "the memory: state store is per process")
    count = min(cores, AUTO_MAX_WORKERS)
    return WorkerPlan(count, f"one per usable core ({cores})")
