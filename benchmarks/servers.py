"""Start, check and stop the servers under test, each as a subprocess on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from models import ModelFiles

from modelport._process import ChildServer, NotReady, ServerExited

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# rotation order
SERVER_NAMES = ("noop-uvicorn", "noop-granian", "noop-modelport", "fastapi", "modelport")
SERVER_ALIASES = {"noop": ("noop-uvicorn", "noop-granian", "noop-modelport")}
READY_TIMEOUT_S = 90.0


class ServerError(RuntimeError):
    """The server could not be started or did not answer correctly."""


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server for one model."""

    name: str
    argv: list[str]
    path: str
    body: Path
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str | None = None
    data_dir: Path | None = None


def _noop_uvicorn(model: ModelFiles, port: int, http: str = "httptools") -> ServerSpec:
    argv = [
        str(VENV_BIN / "uvicorn"),
        "baselines.noop_asgi:app",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    name = "noop-uvicorn" if http == "httptools" else "noop-modelport"
    return ServerSpec(name, argv, "/predict", model.native_body)


def _noop_modelport(model: ModelFiles, port: int) -> ServerSpec:
    """The no-op app on uvicorn's server with modelport's HTTP protocol (api/protocol.py)."""
    return _noop_uvicorn(model, port, http="modelport.api.protocol:HttpProtocol")


def _noop_granian(model: ModelFiles, port: int) -> ServerSpec:
    argv = [
        str(VENV_BIN / "granian"),
        "--interface",
        "asgi",
        "--http",
        "1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "baselines.noop_asgi:app",
    ]
    return ServerSpec("noop-granian", argv, "/predict", model.native_body)


def _fastapi(model: ModelFiles, port: int) -> ServerSpec:
    argv = [
        str(VENV_BIN / "uvicorn"),
        "baselines.fastapi_app:app",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    return ServerSpec(
        "fastapi",
        argv,
        "/predict",
        model.fastapi_body,
        env={"BENCH_MODEL": str(model.model)},
        ready_path="/healthz",
    )


def _modelport(model: ModelFiles, port: int, extra: list[str]) -> ServerSpec:
    exe = VENV_BIN / "modelport"
    if not exe.exists():
        raise ServerError(f"modelport CLI not found at {exe}")
    data_dir = Path(tempfile.mkdtemp(prefix="modelport-", dir=model.model.parent))
    argv = [
        str(exe),
        "serve",
        str(model.model),
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
        *extra,
    ]
    return ServerSpec(
        "modelport",
        argv,
        f"/v1/models/{model.stem}/predict",
        model.native_body,
        ready_path="/readyz",
        data_dir=data_dir,
    )


BUILDERS = {
    "noop-uvicorn": _noop_uvicorn,
    "noop-granian": _noop_granian,
    "noop-modelport": _noop_modelport,
    "fastapi": _fastapi,
}


def spec_for(name: str, model: ModelFiles, port: int, modelport_args: list[str]) -> ServerSpec:
    """The server ``name`` for ``model``; ``modelport_args`` are appended to modelport's."""
    if name == "modelport":
        return _modelport(model, port, modelport_args)
    return BUILDERS[name](model, port)


class RunningServer(ChildServer):
    """A started server process (its own process group) with its log file."""

    stop_timeout_s = 15.0
    terminate_group = True  # SIGTERM to every process of the server at once, as run.py always did

    def __init__(self, spec: ServerSpec, port: int, cpu_prefix: list[str], log: Path) -> None:
        self.spec = spec
        self.port = port
        super().__init__(cpu_prefix + spec.argv, log, cwd=BENCH_DIR, env=os.environ | spec.env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.spec.path}"

    def last_lines(self, lines: int = 8) -> str:
        """The log's last ``lines`` lines on one line, for an error message."""
        return " | ".join(self.log_tail().strip().splitlines()[-lines:])

    def request(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _answers(self) -> bool:
        try:
            if self.spec.ready_path:
                status, _ = self.request("GET", self.spec.ready_path, None)
            else:
                status, _ = self.request("POST", self.spec.path, self.spec.body.read_bytes())
        except OSError:
            return False
        return status == 200

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll until the server answers; return the seconds it took."""
        try:
            return self.wait_until(self._answers, timeout)
        except ServerExited as exc:
            raise ServerError(f"exited with {exc.returncode}: {self.last_lines()}") from None
        except NotReady:
            raise ServerError(f"not ready after {timeout:.0f} s: {self.last_lines()}") from None

    def check_predict(self) -> None:
        """One request with the benchmark body must answer 200 with a JSON body."""
        status, payload = self.request("POST", self.spec.path, self.spec.body.read_bytes())
        if status != 200:
            raise ServerError(f"POST {self.spec.path} -> {status}: {payload[:300]!r}")
        json.loads(payload)

    def stop(self, timeout_s: float | None = None) -> int:
        try:
            return super().stop(timeout_s)
        finally:
            if self.spec.data_dir is not None:
                shutil.rmtree(self.spec.data_dir, ignore_errors=True)
