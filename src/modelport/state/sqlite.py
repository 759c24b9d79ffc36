"""SQLite stores (the default): one file in the data dir, WAL mode, safe across processes.

The CLI (``modelport keys create``) and a running server open the same file; WAL lets the
server keep reading while the CLI writes, and ``busy_timeout`` waits out the other's lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelport.state._sql import Params, SqlKeyStore, SqlUsageStore, schema_sql
from modelport.state.interfaces import Stores

FILENAME = "state.db"


class SqliteDb:
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=10.0
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        self._conn = conn
        for statement in schema_sql("mp_keys", "mp_usage"):
            conn.execute(statement)
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)  # key hashes and usage are nobody else's business

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteDb used before open()")
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._lock:
            return self._c().execute(sql, params).rowcount

    def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._c().execute(sql, params).fetchall()

    def execute_batch(self, sql: str, rows: Sequence[Params]) -> None:
        with self._lock:
            conn = self._c()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_sqlite(path: Path) -> Stores:
    """Open (creating if needed) the SQLite state file at ``path``."""
    db = SqliteDb(path)
    db.open()
    return Stores(
        keys=SqlKeyStore(db, "mp_keys"), usage=SqlUsageStore(db, "mp_usage"), close=db.close
    )
