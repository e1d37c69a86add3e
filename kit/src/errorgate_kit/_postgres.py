"""PostgreSQL connections for the kit's stores (psycopg 3, the ``errorgate-kit[postgres]`` extra).

A small pool rather than one shared connection: the ASGI middleware calls the store from
``asyncio.to_thread`` workers, and one connection would serialize every request's round trip.
Connections run in autocommit: each store statement is atomic on its own, so no transaction
(and no lock) is held between a request's ``begin`` and its ``complete``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

POSTGRES_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg://")


def conninfo(url: str) -> str:
    """The libpq URL psycopg accepts; ``postgresql+psycopg://`` (SQLAlchemy's spelling, as the
    incident store's config uses) is taken too, so one URL can serve both."""
    return "postgresql://" + url.split("://", 1)[1]


def is_postgres_url(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


class Pool:
    def __init__(self, url: str, max_idle: int = 8) -> None:
        try:
            import psycopg  # optional dependency: errorgate-kit[postgres]
        except ImportError as e:
            raise ImportError(
                "a postgresql:// store needs psycopg: pip install 'errorgate-kit[postgres]'"
            ) from e
        self._psycopg = psycopg
        self._conninfo = conninfo(url)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    def _connect(self) -> Any:
        return self._psycopg.connect(self._conninfo, autocommit=True)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self._connect()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _give_back(self, conn: Any) -> None:
        if not conn.closed:  # a broken connection (server restarted) is closed: not handed out again
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[int, list[tuple[Any, ...]]]:
        """(rowcount, rows) of one autocommitted statement."""
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description is not None else []
            return cur.rowcount, rows

    def create_schema(self, statements: list[str]) -> None:
        """Run ``CREATE ... IF NOT EXISTS`` statements; two processes starting at once may race on
        the catalog (``IF NOT EXISTS`` is not atomic there), and the loser's error is harmless."""
        errors = self._psycopg.errors
        for sql in statements:
            try:
                self.execute(sql)
            except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
                pass

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
