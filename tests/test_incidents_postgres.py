"""The incident store on a real PostgreSQL (Debian's postgresql-15, started by the test on
loopback): migrations from an empty database, two engines sharing it (the HA case), and a
webhook while the database is down (503 + Retry-After, then stored once on the retry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from errorgate.incidents.store import Store
from tests.support.incidents import EngineServer, alert, alertmanager_payload, call
from tests.support.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


@pytest.fixture
def url(pg: PostgresServer) -> Iterator[str]:
    """A clean database per test: the schema is dropped, so each test migrates from empty."""
    yield pg.url
    engine = sa.create_engine(pg.url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def test_migrations_apply_to_an_empty_database_and_twice_is_a_no_op(url: str) -> None:
    store = Store(url)
    store.upgrade()
    store.upgrade()  # a second engine starting on a migrated database
    inspector = sa.inspect(store.engine)
    assert {"incidents", "alerts", "timeline", "audit", "action_items", "alembic_version"} <= set(
        inspector.get_table_names()
    )
    with store.begin() as conn:
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == ["0002"]  # the newest bundled migration
    store.dispose()


def test_two_engines_on_one_database_see_the_same_incidents(url: str) -> None:
    a, b = EngineServer(url), EngineServer(url)
    try:
        assert a.post_alerts(alertmanager_payload(alert("checkout"))).status == 200
        [seen] = b.incidents()
        assert seen["services"] == ["checkout"] and seen["status"] == "open"
        assert b.action(seen["id"], "ack").status == 200
        assert a.incidents()[0]["status"] == "acknowledged"
        # Alertmanager in HA sends the same notification to both engines at once: one incident.
        payload = alertmanager_payload(alert("payments", fingerprint="b2", incident_id="INC-7"))
        replies: list[int] = []
        threads = [
            threading.Thread(target=lambda s=s: replies.append(s.post_alerts(payload).status))
            for s in (a, b) * 3
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert replies == [200] * 6
        payments = [i for i in a.incidents() if i["services"] == ["payments"]]
        assert len(payments) == 1, payments
        detail = call("GET", f"{b.url}/api/v1/incidents/{payments[0]['id']}", token=None).body
        assert [e["kind"] for e in detail["timeline"]] == ["opened", "alert_firing"]
    finally:
        a.stop()
        b.stop()


def test_webhook_while_postgres_is_down_is_503_then_stored_once_on_retry(
    pg: PostgresServer, url: str
) -> None:
    srv = EngineServer(url)
    payload = alertmanager_payload(alert("checkout"))
    try:
        assert srv.post_alerts(payload).status == 200  # a pooled connection exists before the outage
        retry = alertmanager_payload(alert("search", fingerprint="c3"), group_key='{}:{service="search"}')
        pg.stop()
        down = srv.post_alerts(retry)
        assert down.status == 503, down.body
        assert down.headers.get("Retry-After") == "5"
        pg.start()
        # Alertmanager retries the same notification; it lands once.
        again = srv.post_alerts(retry)
        assert again.status == 200, again.body
        assert srv.post_alerts(retry).status == 200
        search = [i for i in srv.incidents() if i["services"] == ["search"]]
        assert len(search) == 1
        detail = call("GET", f"{srv.url}/api/v1/incidents/{search[0]['id']}", token=None).body
        assert [e["kind"] for e in detail["timeline"]] == ["opened", "alert_firing"]
    finally:
        srv.stop()
