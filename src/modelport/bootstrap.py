"""The composition root: settings in, wired services out. The only wiring code."""

from __future__ import annotations

from pathlib import Path

from modelport.api.security import build_gate  # security (issue 4)
from modelport.api.services import Services
from modelport.clock import MonotonicClock
from modelport.core import repository
from modelport.core.discovery import RuntimeTable
from modelport.core.registry import ExecutorFactory, Registry
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
    factory: ExecutorFactory = process_executor_factory(settings.executors.process_workers)
    return factory


def build(settings: Settings, *, demo_repository: Path | None = None) -> Services:
    """Wire every component from ``settings``. Does no model I/O (that happens at start-up)."""
    clock = MonotonicClock()
    registry = Registry(
        RuntimeTable.discover(),
        settings.batching,
        settings.executors,
        clock,
        process_factory=_process_factory(settings),
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
