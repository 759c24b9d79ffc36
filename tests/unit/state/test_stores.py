"""One suite for every KeyStore/UsageStore backend (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from modelport.errors import ConfigError
from modelport.state.interfaces import KeyRecord, Stores, UsageRow


def record(key_id: str = "abc123", **kw: object) -> KeyRecord:
    base: dict[str, object] = {
        "id": key_id,
        "name": "team-a",
        "secret_hash": "00" * 32,
        "scopes": ("predict:iris", "read"),
        "created_at": 1_700_000_000.0,
    }
    base.update(kw)
    return KeyRecord(**base)  # type: ignore[arg-type]


def test_put_get_roundtrip_keeps_every_field(stores: Stores) -> None:
    full = record(
        expires_at=1_800_000_000.5,
        rate="10/s",
        burst=20,
        quota="1000/day",
        allow_from=("10.0.0.0/8", "127.0.0.1"),
    )
    stores.keys.put(full)
    assert stores.keys.get("abc123") == full
    assert stores.keys.get("nope") is None


def test_put_twice_is_refused(stores: Stores) -> None:
    stores.keys.put(record())
    with pytest.raises(ConfigError):
        stores.keys.put(record(name="other"))


def test_list_is_oldest_first(stores: Stores) -> None:
    stores.keys.put(record("b", created_at=2.0))
    stores.keys.put(record("a", created_at=3.0))
    stores.keys.put(record("c", created_at=1.0))
    assert [r.id for r in stores.keys.list()] == ["c", "b", "a"]


def test_revoke_keeps_first_time_and_reports_missing(stores: Stores) -> None:
    stores.keys.put(record())
    assert stores.keys.revoke("abc123", 5.0)
    assert stores.keys.revoke("abc123", 9.0)
    got = stores.keys.get("abc123")
    assert got is not None and got.revoked_at == 5.0
    assert not stores.keys.revoke("missing", 5.0)


def test_set_secret_rotates_unless_revoked(stores: Stores) -> None:
    stores.keys.put(record())
    assert stores.keys.set_secret("abc123", "11" * 32)
    got = stores.keys.get("abc123")
    assert got is not None and got.secret_hash == "11" * 32
    stores.keys.revoke("abc123", 5.0)
    assert not stores.keys.set_secret("abc123", "22" * 32)
    assert not stores.keys.set_secret("missing", "22" * 32)


def test_touch_records_latest_last_used(stores: Stores) -> None:
    stores.keys.put(record())
    stores.keys.touch({"abc123": 10.0, "missing": 3.0})
    stores.keys.touch({})
    got = stores.keys.get("abc123")
    assert got is not None and got.last_used_at == 10.0


def test_usage_add_accumulates_per_group(stores: Stores) -> None:
    stores.usage.add(
        [
            UsageRow("k1", "iris", "1", "2024-01-01", 2, 10, 0, 0.5),
            UsageRow("k1", "iris", "2", "2024-01-01", 1, 1, 1, 0.25),
        ]
    )
    stores.usage.add([UsageRow("k1", "iris", "1", "2024-01-01", 3, 5, 1, 0.25)])
    stores.usage.add([])
    assert stores.usage.query() == [
        UsageRow("k1", "iris", "1", "2024-01-01", 5, 15, 1, 0.75),
        UsageRow("k1", "iris", "2", "2024-01-01", 1, 1, 1, 0.25),
    ]


def test_usage_query_filters_by_day_and_key(stores: Stores) -> None:
    stores.usage.add(
        [
            UsageRow("k2", "m", "1", "2024-01-02", 1),
            UsageRow("k1", "m", "1", "2024-01-01", 1),
            UsageRow("k1", "m", "1", "2024-01-03", 1),
        ]
    )
    assert [(r.key_id, r.day) for r in stores.usage.query()] == [
        ("k1", "2024-01-01"),
        ("k2", "2024-01-02"),
        ("k1", "2024-01-03"),
    ]
    assert [r.day for r in stores.usage.query(since="2024-01-02")] == ["2024-01-02", "2024-01-03"]
    assert [r.day for r in stores.usage.query(key_id="k1")] == ["2024-01-01", "2024-01-03"]


def test_usage_add_from_many_threads_loses_nothing(stores: Stores) -> None:
    def worker() -> None:
        for _ in range(20):
            stores.usage.add(
                [
                    UsageRow("k", "m", "1", "2024-01-01", 1, 2, 0, 0.0),
                    UsageRow("k", "m", "2", "2024-01-01", 1, 1, 0, 0.0),
                ]
            )

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = stores.usage.query()
    assert [(r.version, r.requests, r.rows) for r in rows] == [("1", 160, 320), ("2", 160, 160)]
