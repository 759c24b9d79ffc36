"""JWT over HTTP: valid tokens pass; expired, wrong audience/issuer, tampered, alg none → 401."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest

from modelport.clock import ManualClock
from tests.api._security_helpers import BODY, T0, bearer, secured_client

SECRET = "an-hs256-secret-for-tests-0123456789"
PREDICT = "/v1/models/m1/predict"
SETTINGS = {
    "auth": {
        "modes": "keys,jwt",
        "jwt_secret": SECRET,
        "jwt_issuer": "https://id.example",
        "jwt_audience": "modelport",
    }
}


def token(**over: Any) -> str:
    claims: dict[str, Any] = {
        "sub": "svc-a",
        "iss": "https://id.example",
        "aud": "modelport",
        "exp": int(T0) + 600,
        "scope": "predict:m1",
    }
    claims.update(over)
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def test_jwt_valid_and_invalid(tmp_path: Path, clock: ManualClock) -> None:
    with secured_client(tmp_path, SETTINGS, clock=clock) as (client, gate):
        assert client.post(PREDICT, json=BODY, headers=bearer(token())).status_code == 200
        no_scope = client.post("/v1/models/m2/predict", json=BODY, headers=bearer(token()))
        assert no_scope.status_code == 403
        good = token()
        head, _, sig = good.split(".")
        forged = jwt.utils.base64url_encode(
            json.dumps({"sub": "svc-a", "exp": int(T0) + 600, "scope": "admin"}).encode()
        ).decode()
        bad_tokens = [
            token(exp=int(T0) - 3600),
            token(aud="other"),
            token(iss="https://evil.example"),
            f"{head}.{forged}.{sig}",
            jwt.encode({"sub": "x", "exp": int(T0) + 600, "scope": "admin"}, None, "none"),  # type: ignore[arg-type]
            jwt.encode({"sub": "x", "exp": int(T0) + 600}, "wrong-secret-0123456789abcdefghij"),
        ]
        messages = set()
        for bad in bad_tokens:
            r = client.post(PREDICT, json=BODY, headers=bearer(bad))
            assert r.status_code == 401, bad
            messages.add(r.json()["error"]["message"])
        assert len(messages) == 1
        # API keys still work next to JWTs
        key = gate.manager.create("k", "predict:m1").key
        assert client.post(PREDICT, json=BODY, headers=bearer(key)).status_code == 200
        # a token valid now expires with the clock
        clock.advance(600 + 31)
        assert client.post(PREDICT, json=BODY, headers=bearer(good)).status_code == 401
