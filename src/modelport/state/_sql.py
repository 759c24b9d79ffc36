"""Key and usage stores over any DB-API connection; ``sqlite.py``/``postgres.py`` adapt it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from modelport.errors import ConfigError
from modelport.state.interfaces import KeyRecord, UsageRow

Params = Sequence[Any]


class Db(Protocol):
    """The little a SQL store needs from a connection; each call is its own transaction."""

    placeholder: str  # "?" (sqlite) or "%s" (psycopg)

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the affected row count."""
        ...

    def fetch(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]: ...

    def execute_batch(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement per row, all in one transaction."""
        ...


def schema_sql(keys: str, usage: str) -> list[str]:
    """DDL shared by both backends (types both understand)."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {keys} (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION,
            last_used_at DOUBLE PRECISION,
            rate TEXT,
            burst INTEGER,
            quota TEXT,
            allow_from TEXT NOT NULL DEFAULT ''
        )""",
        f"""CREATE TABLE IF NOT EXISTS {usage} (
            key_id TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            requests BIGINT NOT NULL DEFAULT 0,
            row_count BIGINT NOT NULL DEFAULT 0,
            errors BIGINT NOT NULL DEFAULT 0,
            infer_seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, model, version, day)
        )""",
    ]


_KEY_COLUMNS = (
    "id, name, secret_hash, scopes, created_at, expires_at, revoked_at, last_used_at, "
    "rate, burst, quota, allow_from"
)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        name=row[1],
        secret_hash=row[2],
        scopes=tuple(row[3].split()),
        created_at=float(row[4]),
        expires_at=None if row[5] is None else float(row[5]),
        revoked_at=None if row[6] is None else float(row[6]),
        last_used_at=None if row[7] is None else float(row[7]),
        rate=row[8],
        burst=row[9],
        quota=row[10],
        allow_from=tuple(p for p in (row[11] or "").split(",") if p),
    )


class SqlKeyStore:
    def __init__(self, db: Db, table: str) -> None:
        self._db = db
        self._t = table
        self._p = db.placeholder

    def put(self, record: KeyRecord) -> None:
        p = self._p
        inserted = self._db.execute(
            f"INSERT INTO {self._t} ({_KEY_COLUMNS}) VALUES ({', '.join([p] * 12)}) "
            "ON CONFLICT (id) DO NOTHING",
            (
                record.id,
                record.name,
                record.secret_hash,
                " ".join(record.scopes),
                record.created_at,
                record.expires_at,
                record.revoked_at,
                record.last_used_at,
                record.rate,
                record.burst,
                record.quota,
                ",".join(record.allow_from),
            ),
        )
        if inserted == 0:
            raise ConfigError(f"key id {record.id!r} exists")

    def get(self, key_id: str) -> KeyRecord | None:
        rows = self._db.fetch(
            f"SELECT {_KEY_COLUMNS} FROM {self._t} WHERE id = {self._p}", (key_id,)
        )
        return _record(rows[0]) if rows else None

    def list(self) -> list[KeyRecord]:
        rows = self._db.fetch(f"SELECT {_KEY_COLUMNS} FROM {self._t} ORDER BY created_at, id")
        return [_record(r) for r in rows]

    def revoke(self, key_id: str, at: float) -> bool:
        p = self._p
        return (
            self._db.execute(
                f"UPDATE {self._t} SET revoked_at = COALESCE(revoked_at, {p}) WHERE id = {p}",
                (at, key_id),
            )
            > 0
        )

    def set_secret(self, key_id: str, secret_hash: str) -> bool:
        p = self._p
        return (
            self._db.execute(
                f"UPDATE {self._t} SET secret_hash = {p} WHERE id = {p} AND revoked_at IS NULL",
                (secret_hash, key_id),
            )
            > 0
        )

    def touch(self, last_used: Mapping[str, float]) -> None:
        if not last_used:
            return
        p = self._p
        self._db.execute_batch(
            f"UPDATE {self._t} SET last_used_at = {p} WHERE id = {p} "
            f"AND (last_used_at IS NULL OR last_used_at < {p})",
            [(at, key_id, at) for key_id, at in sorted(last_used.items())],
        )


class SqlUsageStore:
    def __init__(self, db: Db, table: str) -> None:
        self._db = db
        self._t = table
        self._p = db.placeholder

    def add(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        p = self._p
        # sorted, so concurrent writers lock rows in the same order (no deadlocks in PostgreSQL)
        self._db.execute_batch(
            f"INSERT INTO {self._t} AS u "
            "(key_id, model, version, day, requests, row_count, errors, infer_seconds) "
            f"VALUES ({', '.join([p] * 8)}) "
            "ON CONFLICT (key_id, model, version, day) DO UPDATE SET "
            "requests = u.requests + excluded.requests, "
            "row_count = u.row_count + excluded.row_count, "
            "errors = u.errors + excluded.errors, "
            "infer_seconds = u.infer_seconds + excluded.infer_seconds",
            [
                (r.key_id, r.model, r.version, r.day, r.requests, r.rows, r.errors, r.infer_seconds)
                for r in sorted(rows, key=lambda r: r.group)
            ],
        )

    def query(self, since: str | None = None, key_id: str | None = None) -> list[UsageRow]:
        p = self._p
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append(f"day >= {p}")
            params.append(since)
        if key_id is not None:
            where.append(f"key_id = {p}")
            params.append(key_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.fetch(
            "SELECT key_id, model, version, day, requests, row_count, errors, infer_seconds "
            f"FROM {self._t}{clause} ORDER BY day, key_id, model, version",
            params,
        )
        return [
            UsageRow(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), float(r[7]))
            for r in rows
        ]
