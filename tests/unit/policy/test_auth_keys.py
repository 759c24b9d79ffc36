from __future__ import annotations

import pytest

from modelport.clock import ManualClock
from modelport.errors import Unauthenticated
from modelport.policy.auth import REJECTED, AnonymousAuthenticator, ApiKeyAuthenticator
from modelport.policy.keys import KeyManager
from modelport.policy.principal import PrincipalKind
from modelport.policy.quota import Quota
from modelport.policy.ratelimit import Rate
from modelport.settings import LimitsSettings
from modelport.state.memory import MemoryKeyStore

T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


def make_auth(store: MemoryKeyStore, clock: ManualClock, **limits: object) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(store, clock, LimitsSettings(**limits))  # type: ignore[arg-type]


def rejects(auth: ApiKeyAuthenticator, key: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        auth.authenticate(key)
    return caught.value.message


def test_valid_key_gives_a_principal(store: MemoryKeyStore, clock: ManualClock) -> None:
    issued = KeyManager(store, clock).create(
        "team", "predict:iris", rate="5/s", quota="10/day", allow_from=["10.0.0.0/8"]
    )
    principal = make_auth(store, clock).authenticate(issued.key)
    assert principal.id == issued.record.id
    assert principal.kind is PrincipalKind.KEY
    assert principal.scopes == frozenset({"predict:iris"})
    assert principal.rate == Rate.parse("5/s")
    assert principal.quota == Quota(10, "day")
    assert [str(n) for n in principal.allow_from] == ["10.0.0.0/8"]


def test_defaults_apply_to_keys_without_limits(store: MemoryKeyStore, clock: ManualClock) -> None:
    issued = KeyManager(store, clock).create("team", "read")
    principal = make_auth(
        store, clock, default_rate="100/min", default_quota="1000/month"
    ).authenticate(issued.key)
    assert principal.rate == Rate.parse("100/min")
    assert principal.quota == Quota(1000, "month")


def test_unknown_wrong_expired_revoked_all_look_the_same(
    store: MemoryKeyStore, clock: ManualClock
) -> None:
    manager = KeyManager(store, clock)
    auth = make_auth(store, clock)
    good = manager.create("a", "read").key
    expiring = manager.create("b", "read", expires="1h").key
    revoked = manager.create("c", "read")
    wrong_secret = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    unknown = "mp_zzzzzzzzzzzz_" + "A" * 43
    auth.authenticate(expiring)
    manager.revoke(revoked.record.id)
    clock.advance(3601)
    messages = {
        rejects(auth, k) for k in ("", "nonsense", unknown, wrong_secret, expiring, revoked.key)
    }
    assert messages == {REJECTED}
    auth.authenticate(good)


def test_revocation_seen_within_the_cache_ttl(store: MemoryKeyStore, clock: ManualClock) -> None:
    manager = KeyManager(store, clock)
    auth = make_auth(store, clock)
    issued = manager.create("a", "read")
    auth.authenticate(issued.key)
    manager.revoke(issued.record.id)  # e.g. by `modelport keys revoke` in another process
    clock.advance(0.5)
    rejects(auth, issued.key)


def test_new_key_seen_within_the_cache_ttl(store: MemoryKeyStore, clock: ManualClock) -> None:
    auth = make_auth(store, clock)
    unknown = "mp_aaaaaaaaaaaa_" + "A" * 43
    rejects(auth, unknown)
    rotated_later = KeyManager(store, clock).create("x", "read")
    clock.advance(0.5)
    auth.authenticate(rotated_later.key)


def test_rotation_retires_the_old_secret(store: MemoryKeyStore, clock: ManualClock) -> None:
    manager = KeyManager(store, clock)
    auth = make_auth(store, clock)
    old = manager.create("a", "read")
    new = manager.rotate(old.record.id)
    clock.advance(1)
    auth.authenticate(new.key)
    rejects(auth, old.key)


def test_last_used_is_flushed_in_batches(store: MemoryKeyStore, clock: ManualClock) -> None:
    issued = KeyManager(store, clock).create("a", "read")
    auth = make_auth(store, clock)
    clock.advance(10)
    auth.authenticate(issued.key)
    assert store.get(issued.record.id).last_used_at is None  # type: ignore[union-attr]
    assert auth.flush_last_used() == 1
    assert store.get(issued.record.id).last_used_at == T0 + 10  # type: ignore[union-attr]
    assert auth.flush_last_used() == 0


def test_anonymous_principal_per_address() -> None:
    anon = AnonymousAuthenticator(LimitsSettings(anonymous_rate="10/s"))
    principal = anon.authenticate("10.0.0.1")
    assert principal.id == "anon:10.0.0.1" and principal.usage_id == "anonymous"
    assert principal.scopes == frozenset({"*"})
    assert principal.rate == Rate.parse("10/s")
