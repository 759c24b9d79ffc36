from __future__ import annotations

import pytest

from modelport.clock import ManualClock
from modelport.errors import InvalidInput, NotFound
from modelport.policy import keys
from modelport.state.memory import MemoryKeyStore


@pytest.fixture
def manager() -> keys.KeyManager:
    return keys.KeyManager(MemoryKeyStore(), ManualClock(1_700_000_000.0))


def test_key_format_and_hash() -> None:
    key_id = keys.new_id()
    key = keys.new_key(key_id)
    assert key.startswith(f"mp_{key_id}_") and len(key) > 50
    assert keys.key_id_of(key) == key_id
    assert keys.key_id_of("mp_short_x") is None
    assert keys.key_id_of(key + "!") is None
    digest = keys.hash_key(key)
    assert len(digest) == 64 and key not in digest
    assert keys.matches(key, digest)
    assert not keys.matches(key[:-1] + ("A" if key[-1] != "A" else "B"), digest)
    assert keys.new_key(key_id) != key


def test_create_stores_only_the_hash(manager: keys.KeyManager) -> None:
    issued = manager.create(
        "team-a",
        "predict:iris,read",
        rate="10/s",
        burst=5,
        quota="100/day",
        expires="90d",
        allow_from=["10.0.0.1/8"],
    )
    record = manager.get(issued.record.id)
    assert record.secret_hash == keys.hash_key(issued.key)
    assert issued.key not in repr(record)
    assert record.scopes == ("predict:iris", "read")
    assert record.allow_from == ("10.0.0.0/8",)
    assert record.expires_at == pytest.approx(1_700_000_000 + 90 * 86_400)
    out = issued.to_dict()
    assert out["id"] == record.id and out["key"] == issued.key
    assert "secret_hash" not in keys.describe(record)
    assert keys.describe(record, now=1_700_000_000.0)["status"] == "active"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "", "scopes": "read"},
        {"name": "a", "scopes": "write"},
        {"name": "a", "scopes": ""},
        {"name": "a", "scopes": "read", "rate": "10/fortnight"},
        {"name": "a", "scopes": "read", "burst": 3},
        {"name": "a", "scopes": "read", "quota": "5/week"},
        {"name": "a", "scopes": "read", "expires": "soon"},
        {"name": "a", "scopes": "read", "allow_from": ["nowhere"]},
    ],
)
def test_create_validates(manager: keys.KeyManager, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        manager.create(**kwargs)  # type: ignore[arg-type]


def test_revoke_and_rotate(manager: keys.KeyManager) -> None:
    issued = manager.create("a", ["admin"])
    rotated = manager.rotate(issued.record.id)
    assert rotated.key != issued.key and rotated.record.id == issued.record.id
    stored = manager.get(issued.record.id)
    assert keys.matches(rotated.key, stored.secret_hash)
    assert not keys.matches(issued.key, stored.secret_hash)
    revoked = manager.revoke(issued.record.id)
    assert revoked.revoked_at is not None
    assert keys.status(revoked, revoked.revoked_at) == "revoked"
    with pytest.raises(InvalidInput):
        manager.rotate(issued.record.id)
    with pytest.raises(NotFound):
        manager.revoke("missing")
    with pytest.raises(NotFound):
        manager.rotate("missing")
    assert [r.id for r in manager.list()] == [issued.record.id]


def test_parse_duration() -> None:
    assert keys.parse_duration("90d") == 90 * 86_400
    assert keys.parse_duration("2w") == 14 * 86_400
    assert keys.parse_duration("30m") == 1800
    with pytest.raises(InvalidInput):
        keys.parse_duration("0d")
