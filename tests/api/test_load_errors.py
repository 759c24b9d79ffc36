"""A version that failed to load: every route shows clients its state and a generic reason,
never the load error (it can quote file paths and the model's internals), which goes to
the log and to ``GET /admin/models`` (scope admin)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from modelport.api.app import create_app
from modelport.core.registry import LOAD_FAILED_REASON
from modelport.testing import FakeModel, build_test_services

SECRET = "cannot open /srv/private/weights.bin (token sk-123)"
BODY = {"inputs": [[1.0, 2.0, 3.0]]}


class Broken(FakeModel):
    def warmup(self) -> None:
        raise RuntimeError(SECRET)


def _loaded(client: TestClient, headers: dict[str, str] | None = None) -> None:
    """Until both models have had their go (they load in order: broken, then ok)."""
    deadline = time.monotonic() + 10
    while client.get("/v2/models/ok/ready", headers=headers).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[TestClient]:
    services = build_test_services(
        {"broken": Broken(), "ok": FakeModel()},
        settings={"state": {"url": "memory:"}},
        data_dir=tmp_path,
    )
    with (
        caplog.at_level(logging.ERROR, logger="modelport.registry"),
        TestClient(create_app(services), raise_server_exceptions=False) as test_client,
    ):
        _loaded(test_client)
        yield test_client


def _generic(response: Any, status: int) -> None:
    assert response.status_code == status, response.text
    assert "the server log says why" in response.text
    assert "/srv/private" not in response.text and "sk-123" not in response.text


def test_a_request_for_it_gets_a_503_with_no_load_error(client: TestClient) -> None:
    r = client.post("/v1/models/broken/predict", json=BODY)
    _generic(r, 503)
    assert r.json()["error"]["code"] == "model_not_ready"
    message = f"model 'broken' version 1 is failed: {LOAD_FAILED_REASON}"
    assert r.json()["error"]["message"] == message
    _generic(client.post("/v2/models/broken/infer", json={"inputs": []}), 503)


def test_the_model_routes_show_its_state_and_a_generic_reason(client: TestClient) -> None:
    r = client.get("/v1/models/broken")
    _generic(r, 200)
    (version,) = r.json()["versions"]
    assert version["state"] == "failed" and version["error"] == LOAD_FAILED_REASON
    listed = client.get("/v1/models")
    assert "/srv/private" not in listed.text
    _generic(client.get("/v2/models/broken/ready"), 400)
    _generic(client.get("/v2/models/broken/versions/1/ready"), 400)
    index = client.post("/v2/repository/index")
    _generic(index, 200)
    (entry,) = [e for e in index.json() if e["name"] == "broken"]
    assert entry == {
        "name": "broken",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": LOAD_FAILED_REASON,
    }
    metadata = client.get("/v2/models/broken")
    assert metadata.status_code == 503 and "/srv/private" not in metadata.text
    readyz = client.get("/readyz")
    assert readyz.status_code == 503 and "/srv/private" not in readyz.text
    assert readyz.json()["versions"]["broken/1"] == "failed"


def test_the_log_and_the_admin_api_have_the_load_error(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    logged = caplog.get_records("setup")  # the client fixture waited for the load
    assert any(SECRET in record.getMessage() for record in logged)
    r = client.get("/admin/models")  # auth none: every caller has every scope (loopback only)
    assert r.status_code == 200
    versions = {(v["model"], v["version"]): v for v in r.json()["versions"]}
    assert versions[("broken", "1")]["state"] == "failed"
    assert versions[("broken", "1")]["error"] == SECRET
    assert versions[("ok", "1")] == {
        "model": "ok",
        "version": "1",
        "state": "ready",
        "runtime": "object",
        "artifact": "<object>",
        "error": None,
    }


def test_the_admin_models_route_needs_the_admin_scope(tmp_path: Path) -> None:
    services = build_test_services(
        {"broken": Broken(), "ok": FakeModel()},
        settings={"state": {"url": "memory:"}, "auth": {"modes": "keys"}},
        data_dir=tmp_path,
    )
    gate = services.security
    assert gate is not None
    reader = {"Authorization": f"Bearer {gate.manager.create('dash', 'read').key}"}
    admin = {"Authorization": f"Bearer {gate.manager.create('ops', 'admin').key}"}
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        _loaded(client, reader)
        assert client.get("/admin/models").status_code == 401
        assert client.get("/admin/models", headers=reader).status_code == 403
        _generic(client.get("/v1/models/broken", headers=reader), 200)
        r = client.get("/admin/models", headers=admin)
        assert r.status_code == 200 and SECRET in r.text
