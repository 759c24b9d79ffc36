"""Security over HTTP, in-process: 401/403/429, scopes, keys, allow-lists, headers, CORS."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from modelport.clock import ManualClock
from tests.api._security_helpers import BODY, T0, bearer, secured_client

KEYS = {"auth": {"modes": "keys"}}
PREDICT_M1 = "/v1/models/m1/predict"


def assert_401(response: Any) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["code"] == "unauthenticated"
    return {"code": error["code"], "message": error["message"]}


def test_no_unknown_malformed_credentials_are_401_with_one_body(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, _):
        bodies = [
            assert_401(client.post(PREDICT_M1, json=BODY)),
            assert_401(client.post(PREDICT_M1, json=BODY, headers=bearer("mp_x"))),
            assert_401(
                client.post(PREDICT_M1, json=BODY, headers=bearer("mp_abcdefghijkl_" + "A" * 43))
            ),
            assert_401(client.post(PREDICT_M1, json=BODY, headers={"X-API-Key": "nope"})),
            assert_401(client.post(PREDICT_M1, json=BODY, headers={"Authorization": "Basic x"})),
            assert_401(client.get("/v1/models")),
            assert_401(client.get("/admin/keys")),
        ]
        assert all(b == bodies[0] for b in bodies)


def test_public_paths_need_no_credential(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, _):
        for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/v2/health/live"):
            assert client.get(path).status_code == 200, path


def test_key_in_either_header_and_scopes(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, gate):
        key = gate.manager.create("t", "predict:m1").key
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        r = client.post(PREDICT_M1, json=BODY, headers={"X-API-Key": key})
        assert r.status_code == 200
        r = client.post("/v1/models/m2/predict", json=BODY, headers=bearer(key))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert "predict:m2" in r.json()["error"]["message"]
        assert client.get("/v1/models", headers=bearer(key)).status_code == 403
        assert client.get("/admin/keys", headers=bearer(key)).status_code == 403
        reader = gate.manager.create("r", "read,predict:m*").key
        assert client.get("/v1/models", headers=bearer(reader)).status_code == 200
        assert client.get("/v1/models/m1", headers=bearer(reader)).status_code == 200
        # the V2 repository index is a POST that only reads: read scope, not admin
        assert client.post("/v2/repository/index", headers=bearer(reader)).status_code == 200
        assert client.post("/v2/repository/index", headers=bearer(key)).status_code == 403
        r = client.post("/v1/models/m2/versions/1/predict", json=BODY, headers=bearer(reader))
        assert r.status_code == 200
        # V2 infer needs the same predict scope; errors keep the V2 shape
        v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        assert client.post("/v2/models/m1/infer", json=v2, headers=bearer(key)).status_code == 200
        r = client.post("/v2/models/m2/infer", json=v2, headers=bearer(key))
        assert r.status_code == 403 and isinstance(r.json()["error"], str)


def test_revoked_key_is_refused_within_one_second(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, gate):
        issued = gate.manager.create("t", "predict:m1")
        headers = bearer(issued.key)
        assert client.post(PREDICT_M1, json=BODY, headers=headers).status_code == 200
        gate.stores.keys.revoke(issued.record.id, time.time())  # as another process would
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if client.post(PREDICT_M1, json=BODY, headers=headers).status_code == 401:
                break
            time.sleep(0.05)
        assert_401(client.post(PREDICT_M1, json=BODY, headers=headers))


def test_expired_key_is_401(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with secured_client(tmp_path, KEYS, clock=clock) as (client, gate):
        key = gate.manager.create("t", "predict:m1", expires="1h").key
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        clock.advance(3600)
        assert_401(client.post(PREDICT_M1, json=BODY, headers=bearer(key)))


def test_rate_limit_429_then_200_after_the_window(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with secured_client(tmp_path, KEYS, clock=clock) as (client, gate):
        key = gate.manager.create("t", "predict:m1,read", rate="2/s").key
        first = client.post(PREDICT_M1, json=BODY, headers=bearer(key))
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        limited = client.post(PREDICT_M1, json=BODY, headers=bearer(key))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["ratelimit-limit"] == "2"
        assert limited.headers["ratelimit-remaining"] == "0"
        assert int(limited.headers["ratelimit-reset"]) >= 1
        clock.advance(0.5)
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        # every route counts against the key's rate, not only predict
        assert client.get("/v1/models", headers=bearer(key)).status_code == 429


def test_default_rate_from_settings(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    settings = {**KEYS, "limits": {"default_rate": "1/min"}}
    with secured_client(tmp_path, settings, clock=clock) as (client, gate):
        key = gate.manager.create("t", "predict:m1").key
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        r = client.post(PREDICT_M1, json=BODY, headers=bearer(key))
        assert r.status_code == 429 and r.headers["retry-after"] == "60"


def test_quota_exhaustion_is_429_with_its_own_code(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with secured_client(tmp_path, KEYS, clock=clock) as (client, gate):
        key = gate.manager.create("t", "predict:m1,read", quota="2/day").key
        for _ in range(2):
            assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200
        r = client.post(PREDICT_M1, json=BODY, headers=bearer(key))
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "quota_exceeded"
        assert int(r.headers["retry-after"]) > 0
        assert client.get("/v1/models", headers=bearer(key)).status_code == 200  # not metered
        clock.advance(86_400)
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 200


def test_key_allow_list_and_forged_forwarded_for(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, gate):  # peer 203.0.113.10, untrusted
        inside = gate.manager.create("in", "predict:m1", allow_from=["203.0.113.0/24"]).key
        outside = gate.manager.create("out", "predict:m1", allow_from=["10.0.0.0/8"]).key
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(inside)).status_code == 200
        r = client.post(PREDICT_M1, json=BODY, headers=bearer(outside))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        forged = {**bearer(outside), "X-Forwarded-For": "10.1.2.3"}
        assert client.post(PREDICT_M1, json=BODY, headers=forged).status_code == 403


def test_forwarded_for_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    settings = {**KEYS, "security": {"trusted_proxies": "203.0.113.0/24"}}
    with secured_client(tmp_path, settings) as (client, gate):
        key = gate.manager.create("k", "predict:m1", allow_from=["10.0.0.0/8"]).key
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(key)).status_code == 403
        via_proxy = {**bearer(key), "X-Forwarded-For": "10.1.2.3"}
        assert client.post(PREDICT_M1, json=BODY, headers=via_proxy).status_code == 200


def test_server_wide_allow_list(tmp_path: Path) -> None:
    settings = {**KEYS, "security": {"allow_from": "10.0.0.0/8"}}
    with secured_client(tmp_path, settings) as (client, gate):
        key = gate.manager.create("k", "predict:m1").key
        r = client.post(PREDICT_M1, json=BODY, headers=bearer(key))
        assert r.status_code == 403
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_auth_none_lets_everyone_in_limited_per_address(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    settings = {"limits": {"anonymous_rate": "1/s"}}
    with secured_client(tmp_path, settings, clock=clock) as (client, _):
        assert client.post(PREDICT_M1, json=BODY).status_code == 200
        r = client.post(PREDICT_M1, json=BODY)
        assert r.status_code == 429 and "retry-after" in r.headers
        clock.advance(1)
        assert client.get("/admin/keys").status_code == 200


def test_security_headers_on_every_answer_and_cors_off(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, _):
        for response in (
            client.get("/healthz"),
            client.post(PREDICT_M1, json=BODY),
            client.get("/nowhere"),
        ):
            h = response.headers
            assert h["x-content-type-options"] == "nosniff"
            assert h["x-frame-options"] == "DENY"
            assert "default-src 'none'" in h["content-security-policy"]
            assert "referrer-policy" not in h  # browser-document headers: pages only
            assert "strict-transport-security" not in h  # plain HTTP
            assert "access-control-allow-origin" not in h
        page = client.get("/docs").headers
        assert "frame-ancestors 'none'" in page["content-security-policy"]
        assert page["referrer-policy"] == "no-referrer" and page["x-frame-options"] == "DENY"
        assert "permissions-policy" in page and "cross-origin-opener-policy" in page
        preflight = client.options(
            PREDICT_M1,
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_configured_origins(tmp_path: Path) -> None:
    settings = {
        **KEYS,
        "security": {"cors_origins": "https://app.example"},
        "server": {"body_limit_bytes": 1024},
    }
    with secured_client(tmp_path, settings) as (client, gate):
        preflight = client.options(
            PREDICT_M1,
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        key = gate.manager.create("k", "predict:m1").key
        r = client.post(
            PREDICT_M1, json=BODY, headers={**bearer(key), "Origin": "https://app.example"}
        )
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-model-version" in r.headers["access-control-expose-headers"].lower()
        evil = client.options(
            PREDICT_M1,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert evil.headers.get("access-control-allow-origin") != "https://evil.example"
        # an oversized body is refused before anything is read, and still readable by the page
        big = client.post(
            PREDICT_M1,
            content=b"x" * 2048,
            headers={"Origin": "https://app.example", "Content-Type": "application/json"},
        )
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        assert big.headers["access-control-allow-origin"] == "https://app.example"
        assert big.headers["x-content-type-options"] == "nosniff" and "x-request-id" in big.headers


def test_admin_api_manages_keys_with_an_audit_trail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="modelport.audit")
    with secured_client(tmp_path, KEYS) as (client, gate):
        admin = gate.manager.create("root", "admin")
        h = bearer(admin.key)
        r = client.post(
            "/admin/keys",
            json={"name": "team", "scopes": ["predict:m1"], "rate": "5/s", "quota": "10/day"},
            headers=h,
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["key"].startswith(f"mp_{created['id']}_")
        assert r.headers["cache-control"] == "no-store"
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(created["key"])).status_code == 200

        listed = client.get("/admin/keys", headers=h)
        assert listed.status_code == 200
        assert created["key"] not in listed.text and "secret_hash" not in listed.text
        by_id = {k["id"]: k for k in listed.json()["keys"]}
        assert by_id[created["id"]]["status"] == "active"
        assert by_id[created["id"]]["last_used_at"] is None or True
        assert client.get(f"/admin/keys/{created['id']}", headers=h).json()["name"] == "team"

        rotated = client.post(f"/admin/keys/{created['id']}/rotate", headers=h)
        assert rotated.status_code == 200 and rotated.json()["id"] == created["id"]
        new_key = rotated.json()["key"]
        time.sleep(0.6)
        assert_401(client.post(PREDICT_M1, json=BODY, headers=bearer(created["key"])))
        assert client.post(PREDICT_M1, json=BODY, headers=bearer(new_key)).status_code == 200

        assert client.delete(f"/admin/keys/{created['id']}", headers=h).status_code == 200
        time.sleep(0.6)
        assert_401(client.post(PREDICT_M1, json=BODY, headers=bearer(new_key)))

        bad = client.post("/admin/keys", json={"name": "x", "scopes": ["write"]}, headers=h)
        assert bad.status_code == 422
        assert client.delete("/admin/keys/missing", headers=h).status_code == 404
        assert client.post("/admin/keys", content=b"{", headers=h).status_code == 400

    audit = [r.getMessage() for r in caplog.records if r.name == "modelport.audit"]
    assert any("keys.create" in line and admin.record.id in line for line in audit)
    assert any("keys.rotate" in line for line in audit)
    assert any("keys.revoke" in line for line in audit)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (admin.key, created["key"], new_key):
        assert secret not in everything


def test_usage_is_metered_and_exported(tmp_path: Path) -> None:
    with secured_client(tmp_path, KEYS) as (client, gate):
        admin = gate.manager.create("root", "admin").key
        user = gate.manager.create("u", "predict:*")
        for _ in range(3):
            assert client.post(PREDICT_M1, json=BODY, headers=bearer(user.key)).status_code == 200
        two_rows = {"inputs": BODY["inputs"] * 2}
        assert client.post(PREDICT_M1, json=two_rows, headers=bearer(user.key)).status_code == 200
        bad = client.post(PREDICT_M1, json={"inputs": [[1.0]]}, headers=bearer(user.key))
        assert bad.status_code == 422
        client.post("/v1/models/m2/predict", json=BODY, headers=bearer(user.key))
        rows = client.get("/admin/usage", headers=bearer(admin)).json()
        by_model = {(r["key_id"], r["model"], r["version"]): r for r in rows}
        m1 = by_model[(user.record.id, "m1", "1")]
        assert (m1["requests"], m1["rows"], m1["errors"]) == (4, 5, 0)
        errors = by_model[(user.record.id, "m1", "")]  # failed before a version was chosen
        assert (errors["requests"], errors["errors"]) == (1, 1)
        assert by_model[(user.record.id, "m2", "1")]["requests"] == 1
        assert set(m1) >= {"key_id", "model", "version", "day", "requests", "rows", "errors"}
        csv_text = client.get("/admin/usage?format=csv", headers=bearer(admin)).text
        assert csv_text.splitlines()[0].startswith("key_id,model,version,day,requests,rows")
        assert client.get("/admin/usage?since=yesterday", headers=bearer(admin)).status_code == 422


def test_path_and_address_caches_stay_bounded_under_hostile_variety(tmp_path: Path) -> None:
    """Access rules and anonymous principals are cached per path / address: a client that
    sends endless distinct paths must not grow the server's memory without bound."""
    from modelport.api import security
    from modelport.policy import auth

    with secured_client(tmp_path, {}) as (client, gate):
        app: Any = client.app
        while not isinstance(app, security.SecurityMiddleware):
            app = app.app
        for i in range(security._ACCESS_CACHE_SIZE + 50):
            assert client.get(f"/no/such/path/{i}").status_code == 404
        assert 0 < len(app._access) <= security._ACCESS_CACHE_SIZE
        assert client.post("/v1/models/m1/predict", json=BODY).status_code == 200
        anonymous = gate.anonymous
        for i in range(auth._ANONYMOUS_CACHE_SIZE + 10):
            principal = anonymous.authenticate(f"198.51.100.{i}")
            assert principal.id == f"anon:198.51.100.{i}"
        assert len(anonymous._known) <= auth._ANONYMOUS_CACHE_SIZE
        assert anonymous.authenticate("198.51.100.1") is anonymous.authenticate("198.51.100.1")
