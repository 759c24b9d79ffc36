"""Open the configured backends: ``settings.state`` → stores and counters.

url None / sqlite:///path   SQLite (default: ``<data_dir>/state.db``)
postgresql://...            PostgreSQL, tables in schema ``postgres_schema``
memory:                     in-memory (tests; nothing survives, nothing is shared)
redis_url                   shared counters in Redis; else counters in this process
"""

from __future__ import annotations

from pathlib import Path

from modelport.clock import Clock
from modelport.settings import StateSettings
from modelport.state.interfaces import CounterStore, Stores
from modelport.state.memory import MemoryCounterStore, memory_stores
from modelport.state.sqlite import FILENAME, open_sqlite


def describe(state: StateSettings, data_dir: Path) -> str:
    """Where the state lives, safe to print (no password)."""
    url = state.url
    if url is None:
        return f"sqlite:///{data_dir / FILENAME}"
    if url.startswith(("postgresql://", "postgres://")) and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def open_stores(state: StateSettings, data_dir: Path) -> Stores:
    url = state.url
    if url is None:
        return open_sqlite(data_dir / FILENAME)
    if url.startswith("sqlite:///"):
        return open_sqlite(Path(url[len("sqlite:///") :]))
    if url.startswith("memory:"):
        return memory_stores()
    from modelport.state.postgres import open_postgres

    return open_postgres(url, state.postgres_schema)


def open_counters(state: StateSettings, clock: Clock | None = None) -> CounterStore:
    if state.redis_url is None:
        return MemoryCounterStore(clock)
    from modelport.state.redis import RedisCounterStore

    return RedisCounterStore(state.redis_url, prefix=state.redis_prefix)
