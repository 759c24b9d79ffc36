"""What the HTTP layer is given: already-built objects, wired by ``bootstrap.build``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from modelport.api.security import SecurityGate  # security (issue 4)
from modelport.core.registry import Registry
from modelport.core.service import InferenceService
from modelport.observe.worker_stats import StatsBoard
from modelport.settings import Settings


@dataclass
class Services:
    settings: Settings
    registry: Registry
    service: InferenceService
    # start-up / shutdown work run by the app's lifespan, in order (shutdown in reverse)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    # True: answer /healthz at once and load models behind a 503 /readyz (one process).
    # False: finish loading before accepting connections (HTTP workers sharing a port).
    load_in_background: bool = True
    # serving processes only (``modelport serve``): GC thresholds up, freeze after loading
    tune_gc: bool = False
    # security (issue 4): auth, scopes, limits, metering; None = no gate (bare app in tests)
    security: SecurityGate | None = None
    # one of several HTTP workers: batch statistics are shared through this board
    stats_board: StatsBoard | None = None
