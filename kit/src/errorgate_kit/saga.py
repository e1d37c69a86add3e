"""Saga orchestration with persisted steps (SQLite or PostgreSQL) and LIFO idempotent compensations.

Each step's state is written before and after it runs (``started`` → ``done``), so after a crash
``Saga.recover()`` knows which steps may have had effects: it compensates every step that
started, newest first — including one whose outcome is unknown, which is why compensations must
be idempotent (undo what exists, succeed when there is nothing to undo). A compensated step is
recorded and never compensated twice. A saga whose every step finished is completed on recovery.

Telemetry: a span ``saga <name>`` (``saga.name``, ``saga.id``, ``saga.status``), a child span per
step, and an event ``saga.compensation`` on the saga span per compensation; a compensated saga
ends with status ERROR, so errorgate sees a saga that stopped half-way::

    saga = Saga("checkout", [Step("reserve", reserve, release), Step("charge", charge, refund)],
                SagaStore("sqlite:///sagas.db"))     # or SagaStore("postgresql://app@db:5432/shop")
    saga.run("order-42", {"order": 42})
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

from errorgate_kit._otel import record_error, tracer
from errorgate_kit._postgres import Pool, is_postgres_url

Data = dict[str, Any]
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS sagas (id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,"
    " data TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', updated REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS saga_steps (saga_id TEXT NOT NULL, idx INTEGER NOT NULL,"
    " name TEXT NOT NULL, status TEXT NOT NULL, PRIMARY KEY (saga_id, idx))",
]


@dataclass(frozen=True)
class Step:
    name: str
    action: Callable[[Data], Any]  # returns a JSON-serialisable result, stored as data[name]
    compensate: Callable[[Data], None]  # idempotent


@dataclass(frozen=True)
class SagaResult:
    saga_id: str
    status: str  # completed | compensated | compensation_failed
    data: Data
    error: str = ""


class SagaStore:
    """Saga and step states, in SQLite (``sqlite:///PATH``, default in memory) or PostgreSQL
    (``postgresql://USER@HOST:PORT/DB``, ``errorgate-kit[postgres]``) so a saga interrupted on one
    replica is recovered by another. Every write is one upsert, atomic on its own."""

    def __init__(self, url: str = "sqlite:///:memory:") -> None:
        self._pool: Pool | None = None
        if is_postgres_url(url):
            self._pool = Pool(url)
            # DOUBLE PRECISION, not REAL: in PostgreSQL REAL is 4 bytes, too coarse to order by time.
            self._pool.create_schema([_SCHEMA[0].replace("REAL", "DOUBLE PRECISION"), _SCHEMA[1]])
            return
        if not url.startswith("sqlite:///"):
            # Only the scheme is echoed: the rest of a URL may carry a password.
            raise ValueError(
                f"unsupported saga store URL scheme {url.split(':', 1)[0]!r}:"
                " use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
            )
        self._db = sqlite3.connect(
            url.removeprefix("sqlite:///"), check_same_thread=False, isolation_level=None
        )
        self._lock = threading.Lock()
        self._db.executescript(";".join(_SCHEMA))

    def _exec(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._pool is not None:
            # The statements here hold no literal '?': the placeholders are the only ones.
            return self._pool.execute(sql.replace("?", "%s"), args)[1]
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def save(self, saga_id: str, name: str, status: str, data: Data, error: str = "") -> None:
        self._exec(
            "INSERT INTO sagas VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
            " data = excluded.data, error = excluded.error, updated = excluded.updated",
            (saga_id, name, status, json.dumps(data), error, time.time()),
        )

    def set_step(self, saga_id: str, idx: int, name: str, status: str) -> None:
        self._exec(
            "INSERT INTO saga_steps VALUES (?, ?, ?, ?) ON CONFLICT (saga_id, idx) DO UPDATE SET status = excluded.status",
            (saga_id, idx, name, status),
        )

    def load(self, saga_id: str) -> tuple[str, str, Data, dict[int, str]] | None:
        """(name, status, data, step index -> status) or None."""
        rows = self._exec("SELECT name, status, data FROM sagas WHERE id = ?", (saga_id,))
        if not rows:
            return None
        steps = self._exec("SELECT idx, status FROM saga_steps WHERE saga_id = ?", (saga_id,))
        return rows[0][0], rows[0][1], json.loads(rows[0][2]), dict(steps)  # type: ignore[arg-type]

    def unfinished(self, name: str) -> list[str]:
        rows = self._exec(
            "SELECT id FROM sagas WHERE name = ? AND status IN ('running', 'compensating', 'compensation_failed')"
            " ORDER BY updated",
            (name,),
        )
        return [r[0] for r in rows]


class Saga:
    def __init__(self, name: str, steps: list[Step], store: SagaStore) -> None:
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"saga {name!r}: step names must be unique, got {names}")
        self.name, self.steps, self.store = name, steps, store

    def run(self, saga_id: str, data: Data) -> SagaResult:
        """Run the steps in order; on a failure compensate the started ones, newest first.
        Running an id that already finished returns its stored outcome without running anything."""
        existing = self.store.load(saga_id)
        if existing is not None:
            if existing[1] in ("completed", "compensated"):
                return SagaResult(saga_id, existing[1], existing[2])
            return self.resume(saga_id)
        data = dict(data)
        json.dumps(data)  # fail before anything is persisted if the data cannot be stored
        self.store.save(saga_id, self.name, "running", data)
        with self._span(saga_id) as span:
            for idx, step in enumerate(self.steps):
                self.store.set_step(saga_id, idx, step.name, "started")
                try:
                    with tracer().start_as_current_span(
                        f"saga.step {step.name}", record_exception=False, set_status_on_exception=False
                    ) as step_span:
                        step_span.set_attributes(
                            {"saga.name": self.name, "saga.id": saga_id, "saga.step": step.name}
                        )
                        try:
                            data[step.name] = step.action(data)
                        except Exception as exc:
                            record_error(step_span, exc)
                            raise
                except Exception as exc:
                    error = f"{type(exc).__qualname__}: {exc}"
                    self.store.save(saga_id, self.name, "compensating", data, error)
                    return self._compensate(saga_id, data, {i: "started" for i in range(idx + 1)}, span, exc)
                self.store.set_step(saga_id, idx, step.name, "done")
                self.store.save(saga_id, self.name, "running", data)
            self.store.save(saga_id, self.name, "completed", data)
            span.set_attribute("saga.status", "completed")
            return SagaResult(saga_id, "completed", data)

    def resume(self, saga_id: str) -> SagaResult:
        """Finish an interrupted saga: complete it if every step finished, else compensate."""
        found = self.store.load(saga_id)
        if found is None:
            raise KeyError(f"saga {saga_id!r} is not in the store")
        _, status, data, steps = found
        with self._span(saga_id) as span:
            span.set_attribute("saga.recovered", True)
            if status == "running" and all(steps.get(i) == "done" for i in range(len(self.steps))):
                self.store.save(saga_id, self.name, "completed", data)
                span.set_attribute("saga.status", "completed")
                return SagaResult(saga_id, "completed", data)
            self.store.save(saga_id, self.name, "compensating", data, "interrupted")
            return self._compensate(saga_id, data, steps, span, None)

    def recover(self) -> list[SagaResult]:
        """Resume every unfinished saga of this name (call at start-up, after a crash)."""
        return [self.resume(saga_id) for saga_id in self.store.unfinished(self.name)]

    def _span(self, saga_id: str) -> Any:
        span_cm = tracer().start_as_current_span(
            f"saga {self.name}",
            attributes={"saga.name": self.name, "saga.id": saga_id},
            record_exception=False,
            set_status_on_exception=False,
        )
        return span_cm

    def _compensate(
        self, saga_id: str, data: Data, steps: dict[int, str], span: Span, cause: Exception | None
    ) -> SagaResult:
        """Compensate, newest first, every step that started and is not compensated yet."""
        for idx in sorted((i for i, s in steps.items() if s != "compensated"), reverse=True):
            step = self.steps[idx]
            try:
                step.compensate(data)
            except Exception as exc:
                span.add_event(
                    "saga.compensation", {"saga.step": step.name, "saga.compensation.outcome": "failed"}
                )
                error = f"compensation of {step.name!r} failed: {type(exc).__qualname__}: {exc}"
                self.store.save(saga_id, self.name, "compensation_failed", data, error)
                record_error(span, exc)
                span.set_attribute("saga.status", "compensation_failed")
                return SagaResult(saga_id, "compensation_failed", data, error)
            self.store.set_step(saga_id, idx, step.name, "compensated")
            span.add_event("saga.compensation", {"saga.step": step.name, "saga.compensation.outcome": "done"})
        self.store.save(saga_id, self.name, "compensated", data)
        span.set_attribute("saga.status", "compensated")
        if cause is not None:
            record_error(span, cause)
        else:
            span.set_status(Status(StatusCode.ERROR, "saga interrupted and compensated"))
            span.set_attribute("error.type", "SagaInterrupted")
        return SagaResult(
            saga_id, "compensated", data, f"{type(cause).__qualname__}: {cause}" if cause else ""
        )
