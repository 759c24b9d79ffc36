"""Authenticators: a credential string in, a ``Principal`` out, or ``Unauthenticated``.

    ApiKeyAuthenticator   ``mp_<id>_<secret>`` looked up by id in a ``KeyStore`` (short cache)
    JwtAuthenticator      HS256 shared secret, or RS256/ES256 with a PEM public key or JWKS file
    AnonymousAuthenticator  auth mode ``none``: everyone may do everything, limited per address

Every rejection raises ``Unauthenticated`` with the same message, whatever the reason.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from modelport.clock import Clock
from modelport.errors import ConfigError, MissingExtra, Unauthenticated
from modelport.policy import keys as key_rules
from modelport.policy.principal import Principal, PrincipalKind
from modelport.policy.quota import Quota
from modelport.policy.ratelimit import Rate
from modelport.settings import AuthSettings, LimitsSettings
from modelport.state.interfaces import KeyRecord, KeyStore

REJECTED = "a valid API key or bearer token is required (missing, unknown, expired or revoked)"

_CACHE_MAX = 10_000


def rejected() -> Unauthenticated:
    return Unauthenticated(REJECTED)


def default_rate(limits: LimitsSettings) -> Rate | None:
    return (
        None
        if limits.default_rate is None
        else Rate.parse(limits.default_rate, limits.default_burst)
    )


def default_quota(limits: LimitsSettings) -> Quota | None:
    return None if limits.default_quota is None else Quota.parse(limits.default_quota)


class ApiKeyAuthenticator:
    """Verifies API keys against a ``KeyStore``.

    Records are cached for ``cache_ttl_s`` (0.5 s by default), so a key created or revoked
    by another process (``modelport keys revoke``) takes effect within that time.
    ``clock`` is wall-clock time (key expiry and last-used times are Unix seconds).
    """

    def __init__(
        self,
        store: KeyStore,
        clock: Clock,
        limits: LimitsSettings,
        *,
        cache_ttl_s: float = 0.5,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        self._default_rate = default_rate(limits)
        self._default_quota = default_quota(limits)
        self._cache: dict[str, tuple[float, KeyRecord | None, Principal | None]] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()

    def authenticate(self, key: str) -> Principal:
        key_id = key_rules.key_id_of(key)
        if key_id is None:
            raise rejected()
        now = self._clock.now()
        record, principal = self._lookup(key_id, now)
        # hash even when the id is unknown, so timing does not tell which ids exist
        ok = key_rules.matches(key, record.secret_hash if record else "0" * 64)
        if record is None or principal is None or not ok:
            raise rejected()
        if record.revoked_at is not None or (
            record.expires_at is not None and record.expires_at <= now
        ):
            raise rejected()
        self._last_used[key_id] = now
        return principal

    def _lookup(self, key_id: str, now: float) -> tuple[KeyRecord | None, Principal | None]:
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._cache_ttl_s:
            return cached[1], cached[2]
        record = self._store.get(key_id)
        principal = None if record is None else self._principal(record)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key_id] = (now, record, principal)
        return record, principal

    def _principal(self, record: KeyRecord) -> Principal:
        from modelport.policy.network import parse_networks

        return Principal(
            id=record.id,
            kind=PrincipalKind.KEY,
            scopes=frozenset(record.scopes),
            name=record.name,
            rate=Rate.parse(record.rate, record.burst) if record.rate else self._default_rate,
            quota=Quota.parse(record.quota) if record.quota else self._default_quota,
            allow_from=parse_networks(record.allow_from),
        )

    def flush_last_used(self) -> int:
        """Write the last-used times gathered since the previous call; returns how many."""
        with self._lock:
            batch, self._last_used = self._last_used, {}
        if batch:
            self._store.touch(batch)
        return len(batch)


_ANONYMOUS_CACHE_SIZE = 4096


class AnonymousAuthenticator:
    """Auth mode ``none``: a principal per client address, with every scope."""

    def __init__(self, limits: LimitsSettings) -> None:
        self._rate = (
            None
            if limits.anonymous_rate is None
            else Rate.parse(limits.anonymous_rate, limits.anonymous_burst)
        )

        # principals are immutable: one per client address, reused (bounded: addresses
        # come from the network)
        self._known: dict[str, Principal] = {}

    def authenticate(self, address: str) -> Principal:
        principal = self._known.get(address)
        if principal is None:
            if len(self._known) >= _ANONYMOUS_CACHE_SIZE:
                self._known.clear()
            principal = self._known[address] = Principal(
                id=f"anon:{address}",
                kind=PrincipalKind.ANONYMOUS,
                scopes=frozenset({"*"}),
                rate=self._rate,
            )
        return principal


_KEY_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC"}


class JwtAuthenticator:
    """Verifies JWTs: signature, ``exp`` (required), ``nbf``, ``iss``, ``aud``, with ``leeway``.

    The algorithm must be in the allowed list *and* fit the key it selects: HS* tokens are
    checked only against the shared secret, RS*/PS*/ES* only against public keys of that
    family. ``alg: none`` is never allowed. ``clock`` is wall-clock time.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        limits: LimitsSettings,
        algorithms: Sequence[str],
        secret: bytes | None = None,
        public_keys: Sequence[tuple[str | None, str, Any]] = (),
        issuer: str | None = None,
        audience: str | None = None,
        scopes_claim: str = "scope",
        leeway_s: float = 30.0,
    ) -> None:
        try:
            import jwt
        except ImportError as exc:
            raise MissingExtra("jwt", "pyjwt") from exc
        self._jwt = jwt
        bad = [a for a in algorithms if a.lower() == "none" or a[:2] not in ("HS", *_KEY_FAMILIES)]
        if bad:
            raise ConfigError(f"JWT algorithms not allowed: {', '.join(bad)}")
        self._algorithms = tuple(algorithms)
        self._secret = secret
        self._public_keys = list(public_keys)  # (kid, family "RSA"/"EC", key object)
        self._issuer = issuer
        self._audience = audience
        self._scopes_claim = scopes_claim
        self._leeway_s = leeway_s
        self._clock = clock
        self._rate = default_rate(limits)
        self._quota = default_quota(limits)

    @classmethod
    def from_settings(
        cls, auth: AuthSettings, limits: LimitsSettings, clock: Clock
    ) -> JwtAuthenticator:
        """Reads the key files named in ``auth``; raises ``ConfigError`` on a bad file."""
        secret = auth.jwt_secret.get_secret_value().encode() if auth.jwt_secret else None
        public_keys: list[tuple[str | None, str, Any]] = []
        if auth.jwt_public_key_file is not None:
            public_keys.append(_load_pem(auth.jwt_public_key_file))
        if auth.jwt_jwks_file is not None:
            public_keys.extend(_load_jwks(auth.jwt_jwks_file))
        algorithms = list(auth.jwt_algorithms)
        if not algorithms:
            if secret is not None:
                algorithms.append("HS256")
            families = {family for _, family, _ in public_keys}
            if "RSA" in families:
                algorithms.append("RS256")
            if "EC" in families:
                algorithms.append("ES256")
        if any(a.startswith("HS") for a in algorithms) and secret is None:
            raise ConfigError("HS* JWT algorithms need jwt_secret")
        return cls(
            clock=clock,
            limits=limits,
            algorithms=algorithms,
            secret=secret,
            public_keys=public_keys,
            issuer=auth.jwt_issuer,
            audience=auth.jwt_audience,
            scopes_claim=auth.jwt_scopes_claim,
            leeway_s=auth.jwt_leeway_s,
        )

    def authenticate(self, token: str) -> Principal:
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in self._algorithms:
                raise rejected()
            key = self._key_for(alg, header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                    "require": ["exp", "sub"],
                },
            )
        except Unauthenticated:
            raise
        except Exception:  # PyJWTError, and anything a malformed token makes a parser raise
            raise rejected() from None
        self._check_times(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise rejected()
        return Principal(
            id=f"jwt:{sub}",
            kind=PrincipalKind.JWT,
            scopes=frozenset(_scopes(_claim(claims, self._scopes_claim))),
            name=sub,
            rate=self._rate,
            quota=self._quota,
        )

    def _key_for(self, alg: str, kid: object) -> Any:
        if alg.startswith("HS"):
            if self._secret is None:
                raise rejected()
            return self._secret
        family = _KEY_FAMILIES[alg[:2]]
        candidates = [
            k
            for k_id, fam, k in self._public_keys
            if fam == family and (kid is None or k_id is None or k_id == kid)
        ]
        if not candidates:
            raise rejected()
        return candidates[0]

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.now()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise rejected()
        if now > exp + self._leeway_s:
            raise rejected()
        if nbf is not None and (not isinstance(nbf, int | float) or now < nbf - self._leeway_s):
            raise rejected()


def _claim(claims: Mapping[str, Any], path: str) -> object:
    node: object = claims
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _scopes(value: object) -> Iterable[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return ()


def _family(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    raise ConfigError("JWT public keys must be RSA or EC")


def _load_pem(path: Path) -> tuple[str | None, str, Any]:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a PEM public key from {path}: {exc}") from None
    return None, _family(key), key


def _load_jwks(path: Path) -> list[tuple[str | None, str, Any]]:
    import jwt

    try:
        data = json.loads(path.read_text())
        jwks = jwt.PyJWKSet.from_dict(data)
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(f"cannot read a JWKS from {path}: {exc}") from None
    out: list[tuple[str | None, str, Any]] = []
    for jwk in jwks.keys:
        if jwk.key_type in ("RSA", "EC"):  # symmetric keys in a JWKS would invite confusion
            out.append((jwk.key_id, _family(jwk.key), jwk.key))
    if not out:
        raise ConfigError(f"the JWKS {path} holds no RSA or EC public key")
    return out
