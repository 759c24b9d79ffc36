"""Helpers for the security API tests: an in-process app with fake models and a chosen gate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from modelport.api.app import create_app
from modelport.api.security import SecurityGate
from modelport.clock import ManualClock
from modelport.state.memory import MemoryCounterStore, memory_stores
from modelport.testing import FakeModel, build_test_services
from tests.conftest import wait_ready

T0 = 1_700_000_000.0
BODY = {"inputs": [[1.0, 2.0, 3.0]]}
CLIENT = ("203.0.113.10", 50000)


@contextmanager
def secured_client(
    tmp_path: Path,
    settings: dict[str, Any],
    *,
    clock: ManualClock | None = None,
    client: tuple[str, int] = CLIENT,
) -> Iterator[tuple[TestClient, SecurityGate]]:
    """A client for an app serving fake models ``m1`` and ``m2`` behind a security gate
    with in-memory stores; ``clock`` (wall time) when the test moves time itself."""
    tree = {"state": {"url": "memory:"}, **settings}
    services = build_test_services(
        {"m1": FakeModel(), "m2": FakeModel()}, settings=tree, data_dir=tmp_path
    )
    gate = services.security
    assert gate is not None
    if clock is not None:
        services.startup.remove(gate.start)
        services.shutdown.remove(gate.stop)
        gate = SecurityGate(
            services.settings, memory_stores(), MemoryCounterStore(clock), wall=clock
        )
        services.security = gate
        services.startup.append(gate.start)
        services.shutdown.append(gate.stop)
    with TestClient(
        create_app(services), raise_server_exceptions=False, client=client
    ) as test_client:
        wait_ready(test_client)
        yield test_client, gate


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
