"""API keys: ``mp_<id>_<secret>``. Shown once; stored as a SHA-256 hash; compared in constant time.

Keys carry 256 random bits, so a fast hash is enough (nothing to brute-force), and the id
part lets the server find the record without scanning. ``KeyManager`` holds the operations
the CLI and the admin API share: create, list, revoke, rotate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass

from modelport.clock import Clock
from modelport.errors import InvalidInput, NotFound
from modelport.policy import scopes as scope_rules
from modelport.policy.quota import Quota
from modelport.policy.ratelimit import Rate
from modelport.state.interfaces import KeyRecord, KeyStore

_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_LEN = 12
_KEY = re.compile(r"^mp_([a-z0-9]{12})_([A-Za-z0-9_-]{40,64})$")
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_HASH_LABEL = b"modelport-api-key-v1"


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LEN))


def new_key(key_id: str) -> str:
    """A fresh key for ``key_id``: 32 random bytes, URL-safe."""
    return f"mp_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The id inside a well-formed key, or None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def hash_key(key: str) -> str:
    return hmac.new(_HASH_LABEL, key.encode(), hashlib.sha256).hexdigest()


def matches(key: str, secret_hash: str) -> bool:
    """Constant-time comparison of ``key`` against a stored hash."""
    return hmac.compare_digest(hash_key(key), secret_hash)


def parse_duration(text: str) -> float:
    """``"90d"``, ``"12h"``, ``"30m"``, ``"2w"``, ``"3600s"`` → seconds."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) < 1:
        raise InvalidInput(f"duration {text!r} is not N followed by s, m, h, d or w")
    return int(match.group(1)) * _DURATION_S[match.group(2)]


def parse_networks(values: Sequence[str]) -> tuple[str, ...]:
    """Validate IPs/CIDRs (``"10.0.0.0/8"``, ``"::1"``), normalised; raises ``InvalidInput``."""
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise InvalidInput(f"{value!r} is not an IP address or CIDR range") from None
    return tuple(out)


@dataclass(frozen=True)
class IssuedKey:
    """A key as created or rotated: ``key`` is the only copy of the secret; show it once."""

    record: KeyRecord
    key: str

    def to_dict(self) -> dict[str, object]:
        return {"id": self.record.id, "key": self.key, **describe(self.record)}


def describe(record: KeyRecord, now: float | None = None) -> dict[str, object]:
    """Everything about a key that is safe to show (never the hash)."""
    info: dict[str, object] = {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "last_used_at": record.last_used_at,
        "rate": record.rate,
        "burst": record.burst,
        "quota": record.quota,
        "allow_from": list(record.allow_from),
    }
    if now is not None:
        info["status"] = status(record, now)
    return info


def status(record: KeyRecord, now: float) -> str:
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


class KeyManager:
    """Create, list, revoke and rotate keys in a ``KeyStore``; ``clock`` is wall-clock time."""

    def __init__(self, store: KeyStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def create(
        self,
        name: str,
        scopes: str | Sequence[str],
        *,
        rate: str | None = None,
        burst: int | None = None,
        quota: str | None = None,
        expires: str | None = None,
        allow_from: Sequence[str] = (),
    ) -> IssuedKey:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidInput("a key needs a name of 1 to 200 characters")
        if rate is not None:
            rate = Rate.parse(rate, burst).text
        elif burst is not None:
            raise InvalidInput("--burst needs --rate")
        if quota is not None:
            quota = Quota.parse(quota).text
        now = self._clock.now()
        key_id = new_id()
        key = new_key(key_id)
        record = KeyRecord(
            id=key_id,
            name=name,
            secret_hash=hash_key(key),
            scopes=scope_rules.parse(scopes),
            created_at=now,
            expires_at=None if expires is None else now + parse_duration(expires),
            rate=rate,
            burst=burst,
            quota=quota,
            allow_from=parse_networks(allow_from),
        )
        self._store.put(record)
        return IssuedKey(record, key)

    def list(self) -> list[KeyRecord]:
        return self._store.list()

    def get(self, key_id: str) -> KeyRecord:
        record = self._store.get(key_id)
        if record is None:
            raise NotFound(f"no key with id {key_id!r}")
        return record

    def revoke(self, key_id: str) -> KeyRecord:
        if not self._store.revoke(key_id, self._clock.now()):
            raise NotFound(f"no key with id {key_id!r}")
        return self.get(key_id)

    def rotate(self, key_id: str) -> IssuedKey:
        """A new secret for the same id (limits, scopes and usage stay); the old one stops."""
        record = self.get(key_id)
        if record.revoked_at is not None:
            raise InvalidInput(f"key {key_id!r} is revoked; create a new one")
        key = new_key(key_id)
        if not self._store.set_secret(key_id, hash_key(key)):
            raise NotFound(f"no active key with id {key_id!r}")
        return IssuedKey(dataclasses.replace(record, secret_hash=hash_key(key)), key)
