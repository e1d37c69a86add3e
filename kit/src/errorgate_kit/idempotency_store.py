"""Where idempotency records live: SQLite (default, also ``:memory:``) or Redis, chosen by URL.

A record is *in flight* (no status yet, held for ``lease`` seconds so a crashed worker's key frees
itself) or *completed* (the response to replay, kept ``ttl`` seconds). ``begin`` is atomic: of two
concurrent requests with one key exactly one acquires it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


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


def store_from_url(url: str) -> Store:
    """``sqlite:///:memory:``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``redis://host:port/db``."""
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ValueError(
        f"unsupported idempotency store URL {url!r}: use sqlite:///PATH, sqlite:///:memory: or redis://HOST:PORT/DB"
    )
