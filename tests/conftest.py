"""Shared fixtures: the demo repository (built once), in-process apps, a real server process."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from modelport._process import ChildServer, NotReady, ServerExited, free_port
from modelport.api.app import create_app
from modelport.bootstrap import build
from modelport.clock import ManualClock
from modelport.core.busy import BusyBoard
from modelport.core.discovery import RuntimeTable
from modelport.core.registry import ExecutorFactory, Registry
from modelport.core.repository import ModelSource
from modelport.demo import ensure_demo_repository
from modelport.settings import DRAIN_TIMEOUT_S, BatchingSettings, ExecutorSettings, load_settings


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM to pytest (``timeout``, a CI runner) ends the run as Ctrl-C does, so the
    fixtures still stop the servers they started: those run in sessions of their own
    (``ServerProcess``), out of reach of a signal to pytest's process group."""

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut teardown
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo-data")
    ensure_demo_repository(data_dir)
    return data_dir


def wait_ready(client: TestClient | httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise TimeoutError("models did not become ready")


@pytest.fixture(scope="module")
def demo_client(demo_data_dir: Path) -> Iterator[TestClient]:
    """In-process app serving the demo models (iris, diabetes, digits)."""
    settings = load_settings({"data_dir": demo_data_dir}, env={})
    services = build(settings, demo_repository=demo_data_dir / "demo")
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


class ServerProcess(ChildServer):
    """`modelport serve` on a free port, in a session of its own with its output in a file
    (no pipe to fill); ``stop()`` ends its whole process group, workers included."""

    stop_timeout_s = 15.0

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
        super().__init__(
            [sys.executable, "-m", "modelport", "serve", "--port", str(self.port), *args],
            cwd / f"server-{self.port}.log",
            cwd=cwd,
            env=env,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        try:
            self.wait_until(self._ready, timeout)
        except ServerExited:
            raise RuntimeError(f"server exited early:\n{self.output()}") from None
        except NotReady:
            raise TimeoutError(f"server not ready:\n{self.output()}") from None

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def process_ended(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not reaped yet counts as ended)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """Factory: start ``modelport serve ARGS`` on a free port; always stopped afterwards."""
    servers: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(list(args), cwd=tmp_path)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


def write_mlp_onnx(path: Path, width: int = 512) -> Path:
    """A float32 MLP 64 → width → width → 8, large enough for onnxruntime to split a row's
    matrix products across threads."""
    import itertools

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    sizes = [64, width, width, 8]
    nodes, inits, last = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        last = f"m{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def registry_for(
    sources: list[ModelSource],
    process_factory: ExecutorFactory | None = None,
    board: BusyBoard | None = None,
    drain_grace_s: float = DRAIN_TIMEOUT_S,
) -> Registry:
    """A registry with default settings and a manual clock, its sources added (not loaded)."""
    registry = Registry(
        RuntimeTable.discover(),
        BatchingSettings(),
        ExecutorSettings(),
        ManualClock(),
        process_factory=process_factory,
        board=board,
        drain_grace_s=drain_grace_s,
    )
    registry.add_sources(sources)
    return registry
