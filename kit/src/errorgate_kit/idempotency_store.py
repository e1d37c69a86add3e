"""Where idempotency records live: SQLite (default, also ``:memory:``), Redis or PostgreSQL,
chosen by URL.

A record is *in flight* (no status yet, held for ``lease`` seconds so a crashed worker's key frees
itself) or *completed* (the response to replay, kept ``ttl`` seconds). ``begin`` is atomic: of two
concurrent requests with one key exactly one acquires it — across processes and hosts for Redis
and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from errorgate_kit._postgres import Pool, is_postgres_url


@dataclass(frozen=True)
class Record:
    fingerprint: str
    status: int | None = None  # None: in flight
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class Store(Protocol):
    def begin(self, key: str, fingerprint: str, lease: float) -> Record | None:
        """Acquire ``key`` (None) or return the record already holding it."""

    def complete(self, key: str, record: Record, ttl: float) -> None: ...

    def release(self, key: str) -> None: ...


class SQLiteStore:
    def __init__(self, path: str) -> None:
        # One connection behind a lock: ``:memory:`` databases are per connection.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
            " status INTEGER, headers TEXT NOT NULL, body BLOB NOT NULL, expires_at REAL NOT NULL)"
        )

    def begin(self, key: str, fingerprint: str, lease: float) -> Record | None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # other processes on the same file wait here
            try:
                self._db.execute("DELETE FROM idempotency WHERE key = ? AND expires_at <= ?", (key, now))
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO idempotency VALUES (?, ?, NULL, '[]', x'', ?)",
                    (key, fingerprint, now + lease),
                ).rowcount
                row = None
                if not inserted:
                    row = self._db.execute(
                        "SELECT fingerprint, status, headers, body FROM idempotency WHERE key = ?", (key,)
                    ).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row is None:
            return None
        return Record(row[0], row[1], [tuple(h) for h in json.loads(row[2])], bytes(row[3]))

    def complete(self, key: str, record: Record, ttl: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE idempotency SET status = ?, headers = ?, body = ?, expires_at = ? WHERE key = ?",
                (record.status, json.dumps(record.headers), record.body, time.time() + ttl, key),
            )

    def release(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM idempotency WHERE key = ?", (key,))


class RedisStore:
    def __init__(self, url: str, prefix: str = "idempotency:") -> None:
        import redis  # optional dependency: errorgate-kit[redis]

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    @staticmethod
    def _encode(record: Record) -> str:
        body = base64.b64encode(record.body).decode()
        return json.dumps({"f": record.fingerprint, "s": record.status, "h": record.headers, "b": body})

    def begin(self, key: str, fingerprint: str, lease: float) -> Record | None:
        name = self._prefix + key
        value = self._encode(Record(fingerprint))
        if self._redis.set(name, value, nx=True, px=max(1, int(lease * 1000))):
            return None
        raw = self._redis.get(name)
        if raw is None:  # expired between the two calls: try once more
            return (
                None if self._redis.set(name, value, nx=True, px=int(lease * 1000)) else Record(fingerprint)
            )
        data = json.loads(raw)
        return Record(data["f"], data["s"], [tuple(h) for h in data["h"]], base64.b64decode(data["b"]))

    def complete(self, key: str, record: Record, ttl: float) -> None:
        self._redis.set(self._prefix + key, self._encode(record), px=max(1, int(ttl * 1000)))

    def release(self, key: str) -> None:
        self._redis.delete(self._prefix + key)


class PostgresStore:
    """Records in a PostgreSQL table; the row's state is the lock. ``begin`` takes an expired
    row's key back (DELETE) and claims the key with ``INSERT ... ON CONFLICT DO NOTHING``: the
    unique index lets exactly one of several concurrent inserts through, whichever process or
    host they come from. Expiry is reckoned on the database's clock, so replicas whose clocks
    disagree still agree on when a lease or a stored response ends."""

    def __init__(self, url: str, table: str = "idempotency") -> None:
        if not table.isidentifier():
            raise ValueError(f"idempotency table name must be an identifier, got {table!r}")
        self._pool = Pool(url)
        self._table = table
        self._pool.create_schema(
            [
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
                " status INTEGER, headers JSONB NOT NULL DEFAULT '[]', body BYTEA NOT NULL DEFAULT '',"
                " expires_at TIMESTAMPTZ NOT NULL)"
            ]
        )

    def begin(self, key: str, fingerprint: str, lease: float) -> Record | None:
        t = self._table
        for _ in range(3):
            self._pool.execute(f"DELETE FROM {t} WHERE key = %s AND expires_at <= clock_timestamp()", (key,))
            inserted, _rows = self._pool.execute(
                f"INSERT INTO {t} (key, fingerprint, expires_at) VALUES"
                " (%s, %s, clock_timestamp() + make_interval(secs => %s)) ON CONFLICT (key) DO NOTHING",
                (key, fingerprint, lease),
            )
            if inserted:
                return None
            _, rows = self._pool.execute(
                f"SELECT fingerprint, status, headers, body FROM {t} WHERE key = %s", (key,)
            )
            if rows:
                fp, status, headers, body = rows[0]
                return Record(fp, status, [(str(k), str(v)) for k, v in headers], bytes(body))
            # the holder released the key between our INSERT and SELECT: claim it again
        return Record(fingerprint)  # still contended: answer "in progress" rather than loop on

    def complete(self, key: str, record: Record, ttl: float) -> None:
        self._pool.execute(
            f"UPDATE {self._table} SET status = %s, headers = %s::jsonb, body = %s,"
            " expires_at = clock_timestamp() + make_interval(secs => %s) WHERE key = %s",
            (record.status, json.dumps(record.headers), record.body, ttl, key),
        )

    def release(self, key: str) -> None:
        self._pool.execute(f"DELETE FROM {self._table} WHERE key = %s", (key,))

    def close(self) -> None:
        self._pool.close()


def store_from_url(url: str) -> Store:
    """``sqlite:///:memory:``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``redis://host:port/db``,
    ``postgresql://user@host:port/db`` (libpq URL; ``postgres://`` and ``postgresql+psycopg://`` too)."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    if is_postgres_url(url):
        return PostgresStore(url)
    # Only the scheme is echoed: the rest of a URL may carry a password.
    raise ValueError(
        f"unsupported idempotency store URL scheme {url.split(':', 1)[0]!r}: use sqlite:///PATH,"
        " sqlite:///:memory:, redis://HOST:PORT/DB or postgresql://USER@HOST:PORT/DB"
    )
