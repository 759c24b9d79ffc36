"""PostgreSQL stores (``--state postgresql://...``): the same tables, in their own schema.

One connection guarded by a lock: these stores see a few writes per second (batched usage,
key changes); the request path reads keys through the authenticator's short cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from modelport.errors import ConfigError, MissingExtra
from modelport.state._sql import Params, SqlKeyStore, SqlUsageStore, schema_sql
from modelport.state.interfaces import Stores

T = TypeVar("T")


class PostgresDb:
    placeholder = "%s"

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingExtra("postgres", "psycopg") from exc
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            # the message can hold the URL's password: keep only the reason
            raise ConfigError(f"cannot connect to PostgreSQL: {type(exc).__name__}") from None

    def open(self) -> None:
        self._conn = self._connect()
        with self._lock:
            self._conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for statement in schema_sql(self.table("mp_keys"), self.table("mp_usage")):
                self._conn.execute(statement)

    def table(self, name: str) -> str:
        return f'"{self.schema}".{name}'

    def _run(self, work: Callable[[Any], T]) -> T:
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                return work(self._conn)
            except psycopg.OperationalError:
                # the server restarted or the connection dropped: one fresh try
                self._conn = self._connect()
                return work(self._conn)

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(lambda c: int(c.execute(sql, params).rowcount))

    def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda c: list(c.execute(sql, params).fetchall()))

    def execute_batch(self, sql: str, rows: Sequence[Params]) -> None:
        def work(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(sql, rows)

        self._run(work)

    def drop_schema(self) -> None:
        """Delete everything this store made (tests, uninstall)."""
        self._run(lambda c: c.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_postgres(url: str, schema: str = "modelport") -> Stores:
    """Connect and create the schema and tables if needed."""
    db = PostgresDb(url, schema)
    db.open()
    return Stores(
        keys=SqlKeyStore(db, db.table("mp_keys")),
        usage=SqlUsageStore(db, db.table("mp_usage")),
        close=db.close,
    )
