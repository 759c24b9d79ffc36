"""A model served with ``isolation: process`` over HTTP: a worker that dies in the middle of
a request gives that request a clean 503; one that dies while idle is replaced unnoticed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from starlette.testclient import TestClient

from modelport.api.app import create_app
from modelport.bootstrap import build
from modelport.settings import load_settings
from tests.conftest import wait_ready

MODEL = """
import os, time
import numpy as np
class Model:
    signature = {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1, 2]}],
                 "outputs": [{"name": "pid", "dtype": "int64", "shape": [-1]}]}
    def load(self, path):
        pass
    def predict(self, inputs):
        if inputs["x"][0, 0] < 0:  # a negative first value asks for a slow call
            time.sleep(30)
        return {"pid": np.full(len(inputs["x"]), os.getpid())}
"""


def _client(tmp_path: Path) -> TestClient:
    version = tmp_path / "repo" / "isolated" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL)
    (version.parent / "model.yaml").write_text("isolation: process\n")
    settings = load_settings(
        {"repository": tmp_path / "repo", "data_dir": tmp_path / "data"}, env={}
    )
    return TestClient(create_app(build(settings)), raise_server_exceptions=False)


def _pid(client: TestClient) -> int:
    r = client.post("/v1/models/isolated/predict", json={"inputs": [[1, 2]]})
    assert r.status_code == 200, r.text
    return int(r.json()["outputs"][0]["pid"])


def test_worker_killed_mid_request_gives_503_then_recovers(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        wait_ready(client, timeout=60)
        pid = _pid(client)
        assert pid != os.getpid()  # predicted in another process

        slow: dict[str, object] = {}

        def call() -> None:
            r = client.post("/v1/models/isolated/predict", json={"inputs": [[-1, 2]]})
            slow["status"], slow["body"] = r.status_code, r.json()

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)  # the worker is now inside its 30 s predict
        os.kill(pid, signal.SIGKILL)
        caller.join(timeout=20)
        assert not caller.is_alive(), "the request in flight was not failed"
        assert slow["status"] == 503
        body = slow["body"]
        assert isinstance(body, dict) and body["error"]["code"] == "worker_failed"

        new_pid = _pid(client)  # waits for the replacement worker, no error in between
        assert new_pid not in (pid, os.getpid())
        assert client.get("/healthz").status_code == 200


def test_idle_worker_killed_is_replaced_without_an_error(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        wait_ready(client, timeout=60)
        pid = _pid(client)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        assert _pid(client) not in (pid, os.getpid())
