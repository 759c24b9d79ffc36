"""A model served with ``isolation: process`` over HTTP: a dead worker is a clean 503."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from starlette.testclient import TestClient

from modelport.api.app import create_app
from modelport.bootstrap import build
from modelport.settings import load_settings
from tests.conftest import wait_ready

MODEL = """
import os
class Model:
    signature = {"inputs": [{"name": "x", "dtype": "float64", "shape": [-1, 2]}],
                 "outputs": [{"name": "pid", "dtype": "int64", "shape": [-1]}]}
    def load(self, path):
        pass
    def predict(self, inputs):
        import numpy as np
        return {"pid": np.full(len(inputs["x"]), os.getpid())}
"""


def test_killed_worker_gives_503_then_recovers(tmp_path: Path) -> None:
    version = tmp_path / "repo" / "isolated" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(MODEL)
    (version.parent / "model.yaml").write_text("isolation: process\n")
    settings = load_settings(
        {"repository": tmp_path / "repo", "data_dir": tmp_path / "data"}, env={}
    )
    with TestClient(create_app(build(settings)), raise_server_exceptions=False) as client:
        wait_ready(client, timeout=60)
        r = client.post("/v1/models/isolated/predict", json={"inputs": [[1, 2]]})
        assert r.status_code == 200
        pid = r.json()["outputs"][0]["pid"]
        assert pid != os.getpid()  # predicted in another process
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        r = client.post("/v1/models/isolated/predict", json={"inputs": [[1, 2]]})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "worker_failed"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = client.post("/v1/models/isolated/predict", json={"inputs": [[1, 2]]})
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200 and r.json()["outputs"][0]["pid"] not in (pid, os.getpid())
        assert client.get("/healthz").status_code == 200
