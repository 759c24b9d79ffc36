"""Store fixtures: every store test runs against memory, SQLite and PostgreSQL (and Redis for
counters). PostgreSQL/Redis runs use a unique schema / key prefix and drop it afterwards;
they are skipped when the local server is not reachable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.clock import ManualClock
from modelport.state.interfaces import CounterStore, Stores
from modelport.state.memory import MemoryCounterStore, memory_stores
from modelport.state.sqlite import open_sqlite

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=2).close()
    except Exception:
        return False
    return True


def _redis_available() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception:
        return False
    return True


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "memory":
        yield memory_stores()
    elif request.param == "sqlite":
        opened = open_sqlite(tmp_path / "state.db")
        yield opened
        opened.close()
    else:
        if not _pg_available():
            pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
        from modelport.state.postgres import PostgresDb, open_postgres

        schema = unique_name("mp_test")
        opened = open_postgres(PG_URL, schema)
        yield opened
        opened.close()
        cleanup = PostgresDb(PG_URL, schema)
        cleanup.drop_schema()
        cleanup.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture(params=["memory", "redis"])
def counters(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore(clock)
    else:
        if not _redis_available():
            pytest.skip("Redis is not reachable at 127.0.0.1:6379")
        from modelport.state.redis import RedisCounterStore

        store = RedisCounterStore(REDIS_URL, prefix=unique_name("mp_test"))
        yield store
        store.delete_all()
        store.close()
