"""The incident store: SQLAlchemy Core tables on SQLite (default) or PostgreSQL (by URL), its
schema kept by the bundled Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

metadata = sa.MetaData()

incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_key", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("severity", sa.String(4), nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("services", sa.Text, nullable=False),
    sa.Column("first_error_at", sa.Float, nullable=False),
    sa.Column("fired_at", sa.Float, nullable=False),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("acknowledged_at", sa.Float),
    sa.Column("resolved_at", sa.Float),
    sa.Column("closed_at", sa.Float),
    sa.Column("escalation_step", sa.Integer, nullable=False),
    sa.Column("escalated_at", sa.Float),
    sa.Column("postmortem_key", sa.String(64)),
    sa.Column("postmortem_status", sa.String(64)),
    sa.Column("postmortem_done", sa.Boolean, nullable=False),
    sa.Column("silences", sa.Text, nullable=False),
    # What the paging tools were last told: "", "triggered", "acknowledged", "resolved".
    sa.Column("paged", sa.String(16), nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("fingerprint", sa.String(128), nullable=False),
    sa.Column("alertname", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float),
)

timeline = sa.Table(
    "timeline",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
)

# A postmortem's action items, each owned by a team and filed as a Jira issue linked to the
# postmortem; ``jira_key`` is null until filed (the postmortem must exist first).
action_items = sa.Table(
    "action_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("summary", sa.String(255), nullable=False),
    sa.Column("due_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("jira_key", sa.String(64)),
    sa.Column("status", sa.String(64)),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("done_at", sa.Float),
)

# Errors that mean "the database is not reachable right now", as opposed to a bug: webhooks
# answer 503 on them so Alertmanager retries and nothing is lost.
UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


# The advisory lock id every engine takes before a write (any constant shared by all engines).
WRITE_LOCK = 0x6572726F72676174  # "errorgat"


def default_url(data_dir: str) -> str:
    return f"sqlite:///{Path(data_dir) / 'incidents.db'}"


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # A fresh connection per transaction: a database that went away is noticed at once,
            # and SQLite's file lock is never held between requests.
            self.engine = sa.create_engine(url, poolclass=NullPool)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.url = url

    def upgrade(self) -> None:
        """Bring the schema to the newest bundled migration."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(resources.files("errorgate.incidents") / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that changes incidents. On PostgreSQL it first takes a transaction-level
        advisory lock: engines sharing the database (HA) would otherwise both find no open incident
        for an alert that reached each of them and open two. SQLite has one writer anyway."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
