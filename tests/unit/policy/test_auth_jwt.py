from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelport.clock import ManualClock
from modelport.errors import ConfigError, Unauthenticated
from modelport.policy.auth import REJECTED, JwtAuthenticator
from modelport.policy.principal import PrincipalKind
from modelport.settings import AuthSettings, LimitsSettings

T0 = 1_700_000_000
SECRET = "s3cret-for-tests-only-0123456789abcdef"


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": "https://issuer.example",
        "aud": "modelport",
        "exp": T0 + 300,
        "nbf": T0 - 10,
        "scope": "predict:iris read",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs_auth(clock: ManualClock, **over: Any) -> JwtAuthenticator:
    settings = AuthSettings(
        modes=("jwt",),
        jwt_secret=SECRET,  # type: ignore[arg-type]
        jwt_issuer="https://issuer.example",
        jwt_audience="modelport",
        **over,
    )
    return JwtAuthenticator.from_settings(settings, LimitsSettings(), clock)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(float(T0))


def rejected(auth: JwtAuthenticator, token: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(token)
    assert caught.value.message == REJECTED


def test_hs256_valid_token(clock: ManualClock) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    principal = hs_auth(clock).authenticate(token)
    assert principal.id == "jwt:alice" and principal.kind is PrincipalKind.JWT
    assert principal.scopes == frozenset({"predict:iris", "read"})


@pytest.mark.parametrize(
    "bad",
    [
        {"exp": T0 - 31},  # expired beyond the 30 s leeway
        {"exp": None},  # exp is required
        {"nbf": T0 + 31},  # not yet valid
        {"aud": "someone-else"},
        {"aud": None},
        {"iss": "https://evil.example"},
        {"sub": None},
    ],
)
def test_claims_are_checked(clock: ManualClock, bad: dict[str, Any]) -> None:
    rejected(hs_auth(clock), jwt.encode(claims(**bad), SECRET, algorithm="HS256"))


def test_leeway_allows_small_skew(clock: ManualClock) -> None:
    auth = hs_auth(clock)
    auth.authenticate(jwt.encode(claims(exp=T0 - 29, nbf=T0 + 29), SECRET, algorithm="HS256"))


def test_tampered_wrong_secret_and_alg_none(clock: ManualClock) -> None:
    auth = hs_auth(clock)
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    head, body, sig = token.split(".")
    forged_body = jwt.utils.base64url_encode(json.dumps(claims(scope="admin")).encode()).decode()
    rejected(auth, f"{head}.{forged_body}.{sig}")
    rejected(auth, jwt.encode(claims(), "another-secret-0123456789abcdef012", algorithm="HS256"))
    none_token = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    rejected(auth, none_token)
    rejected(auth, f"{head}.{body}.")
    rejected(auth, "not-a-jwt")
    rejected(auth, "")


def _rsa_pem(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "public.pem"
    path.write_bytes(pem)
    return private, path


def test_rs256_with_pem_and_algorithm_confusion(clock: ManualClock, tmp_path: Path) -> None:
    private, path = _rsa_pem(tmp_path)
    auth = JwtAuthenticator.from_settings(
        AuthSettings(modes=("jwt",), jwt_public_key_file=path, jwt_audience="modelport"),
        LimitsSettings(),
        clock,
    )
    auth.authenticate(jwt.encode(claims(), private, algorithm="RS256"))
    # classic confusion: HS256 signed with the public key's PEM as the HMAC secret
    pem = path.read_bytes()
    import hashlib
    import hmac

    header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
    payload = jwt.utils.base64url_encode(json.dumps(claims()).encode())
    signing_input = header + b"." + payload
    sig = jwt.utils.base64url_encode(hmac.new(pem, signing_input, hashlib.sha256).digest())
    rejected(auth, (signing_input + b"." + sig).decode())
    # RS256 signed by some other key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected(auth, jwt.encode(claims(), other, algorithm="RS256"))


def test_es256_with_jwks_and_kid(clock: ManualClock, tmp_path: Path) -> None:
    k1 = ec.generate_private_key(ec.SECP256R1())
    k2 = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": []}
    for kid, key in (("one", k1), ("two", k2)):
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg="ES256", use="sig")
        jwks["keys"].append(jwk)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    auth = JwtAuthenticator.from_settings(
        AuthSettings(
            modes=("jwt",),
            jwt_jwks_file=path,
            jwt_audience="modelport",
            jwt_scopes_claim="permissions",
        ),
        LimitsSettings(),
        clock,
    )
    token = jwt.encode(claims(permissions=["admin"]), k2, algorithm="ES256", headers={"kid": "two"})
    assert auth.authenticate(token).scopes == frozenset({"admin"})
    wrong_kid = jwt.encode(claims(), k2, algorithm="ES256", headers={"kid": "one"})
    rejected(auth, wrong_kid)
    rejected(auth, jwt.encode(claims(), SECRET, algorithm="HS256"))  # no secret configured


def test_nested_scope_claim(clock: ManualClock) -> None:
    auth = hs_auth(clock, jwt_scopes_claim="realm.roles")
    token = jwt.encode(claims(realm={"roles": ["read", 3]}), SECRET, algorithm="HS256")
    assert auth.authenticate(token).scopes == frozenset({"read"})


def test_bad_configuration(clock: ManualClock, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        hs_auth(clock, jwt_algorithms=("none",))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError):
        JwtAuthenticator.from_settings(
            AuthSettings(modes=("jwt",), jwt_public_key_file=bad), LimitsSettings(), clock
        )
    _, pem = _rsa_pem(tmp_path)
    with pytest.raises(ConfigError):
        JwtAuthenticator.from_settings(
            AuthSettings(modes=("jwt",), jwt_public_key_file=pem, jwt_algorithms=("HS256",)),
            LimitsSettings(),
            clock,
        )
