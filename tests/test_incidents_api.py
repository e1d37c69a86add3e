"""The incident engine's HTTP API: webhooks -> incidents, grouping, lifecycle, auth, audit,
bad input and a store that is down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.incidents import TOKEN, EngineServer, alert, alertmanager_payload, call


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[EngineServer]:
    server = EngineServer(f"sqlite:///{tmp_path / 'db' / 'incidents.db'}")
    yield server
    server.stop()


def test_firing_p1_opens_an_incident_with_the_contract_fields(srv: EngineServer) -> None:
    reply = srv.post_alerts(alertmanager_payload(alert(first_error="2025-06-15T13:58:00Z")))
    assert reply.status == 200, reply.body
    [inc] = srv.incidents()
    assert inc["status"] == "open" and inc["severity"] == "P1" and inc["services"] == ["checkout"]
    assert inc["first_error_at"] == "2025-06-15T13:58:00.000Z"
    assert inc["opened_at"] and inc["acknowledged_at"] is None and inc["resolved_at"] is None
    assert inc["postmortem"] is None
    assert set(inc) >= {"id", "status", "severity", "services", "opened_at", "first_error_at",
                        "acknowledged_at", "resolved_at", "postmortem"}  # fmt: skip
    detail = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body
    assert [e["kind"] for e in detail["timeline"]] == ["opened", "alert_firing"]


def test_repeated_notifications_do_not_repeat_on_the_timeline(srv: EngineServer) -> None:
    for _ in range(3):
        assert srv.post_alerts(alertmanager_payload(alert())).status == 200
    [inc] = srv.incidents()
    detail = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body
    assert len(detail["timeline"]) == 2


def test_alerts_sharing_an_incident_id_or_origin_become_one_incident(srv: EngineServer) -> None:
    srv.post_alerts(
        alertmanager_payload(alert("checkout", fingerprint="a", incident_id="inc-7"), group_key="g1")
    )
    srv.post_alerts(
        alertmanager_payload(alert("payments", "P2", fingerprint="b", incident_id="inc-7"), group_key="g2")
    )
    srv.post_alerts(
        alertmanager_payload(alert("frontend", "P3", fingerprint="c", origin_service="db"), group_key="g3")
    )
    srv.post_alerts(
        alertmanager_payload(alert("catalog", "P3", fingerprint="d", origin_service="db"), group_key="g4")
    )
    srv.post_alerts(alertmanager_payload(alert("batch-reports", "P4", fingerprint="e"), group_key="g5"))
    got = sorted((tuple(i["services"]), i["severity"]) for i in srv.incidents())
    assert got == [
        (("batch-reports",), "P4"),
        (("catalog", "frontend"), "P3"),
        (("checkout", "payments"), "P1"),
    ]


def test_lifecycle_ack_resolve_close_and_p1_needs_a_done_postmortem(srv: EngineServer) -> None:
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    assert srv.action(inc["id"], "ack", by="alice").body["status"] == "acknowledged"
    srv.clock.now += 600
    srv.post_alerts(alertmanager_payload(alert(status="resolved"), status="resolved"))
    [inc] = srv.incidents()
    assert inc["status"] == "resolved" and inc["resolved_at"]
    refused = srv.action(inc["id"], "close")
    assert refused.status == 409 and "postmortem" in refused.body["error"]
    srv.engine.record(int(inc["id"]), "postmortem", "jira", "done", postmortem_key="OPS-1",
                      postmortem_status="Done", postmortem_done=True)  # fmt: skip
    assert srv.action(inc["id"], "close").body["status"] == "closed"
    detail = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds == [
        "opened",
        "alert_firing",
        "acknowledged",
        "alert_resolved",
        "resolved",
        "postmortem",
        "closed",
    ]
    assert detail["timeline"][2]["actor"] == "alice"
    actions = [(a["action"], a["outcome"]) for a in srv.engine.audit_trail()]
    assert ("ack", "ok") in actions and ("close", "refused") in actions and ("close", "ok") in actions


def test_a_note_is_on_the_timeline(srv: EngineServer) -> None:
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    assert srv.action(inc["id"], "note", text="rolled back v2.3").status == 200
    assert srv.action(inc["id"], "note", text="  ").status == 400
    detail = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body
    assert detail["timeline"][-1]["message"] == "rolled back v2.3"


def test_every_change_needs_the_token_and_refusals_are_audited(srv: EngineServer) -> None:
    assert srv.post_alerts(alertmanager_payload(alert()), token=None).status == 401
    assert srv.post_alerts(alertmanager_payload(alert()), token="wrong").status == 401
    assert srv.incidents() == []
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    assert srv.action(inc["id"], "ack", token="wrong").status == 401
    assert srv.incidents()[0]["status"] == "open"
    assert [a["outcome"] for a in srv.engine.audit_trail()].count("denied") == 3


def test_without_a_configured_token_changes_are_refused_naming_the_key(tmp_path: Path) -> None:
    server = EngineServer(f"sqlite:///{tmp_path / 'x.db'}", token=None)
    try:
        reply = server.post_alerts(alertmanager_payload(alert()))
        assert reply.status == 401 and "incidents.token_env" in reply.body["error"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        ({"version": "3", "groupKey": "g", "status": "firing", "alerts": [alert()]}, "version"),
        ({**alertmanager_payload(alert()), "alerts": []}, "alerts"),
        (alertmanager_payload({**alert(), "startsAt": "yesterday"}), "alerts.0.startsAt"),
        (alertmanager_payload({**alert(), "status": "burning"}), "alerts.0.status"),
        (alertmanager_payload(alert(first_error="soon")), "first_error_at"),
    ],
)
def test_malformed_webhooks_are_400_with_the_reason_and_nothing_is_stored(
    srv: EngineServer, payload: object, reason: str
) -> None:
    raw = payload if isinstance(payload, bytes) else None
    reply = call("POST", f"{srv.url}/api/v1/alerts/alertmanager", None if raw else payload, raw=raw)
    assert reply.status == 400 and reason in reply.body["error"], reply.body
    assert srv.incidents() == []


def test_grafana_webhook_contact_point(srv: EngineServer) -> None:
    payload = {
        "receiver": "errorgate", "status": "firing", "orgId": 1, "groupKey": "{}/{}:{}", "version": "1",
        "title": "[FIRING:1]", "state": "alerting", "message": "",
        "alerts": [{**alert("frontend", "P2"), "fingerprint": "", "values": {"A": 1}, "silenceURL": ""}],
    }  # fmt: skip
    assert srv.post_alerts(payload, source="grafana").status == 200
    [inc] = srv.incidents()
    assert inc["services"] == ["frontend"] and inc["severity"] == "P2"


def test_a_store_that_is_down_answers_503_and_the_retry_is_kept(srv: EngineServer, tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    shutil.move(db_dir, tmp_path / "away")
    reply = srv.post_alerts(alertmanager_payload(alert()))
    assert reply.status == 503 and reply.headers.get("Retry-After")
    shutil.move(tmp_path / "away", db_dir)
    assert srv.post_alerts(alertmanager_payload(alert())).status == 200  # Alertmanager's retry
    assert len(srv.incidents()) == 1


def test_migrations_are_bundled_and_rerunnable(srv: EngineServer) -> None:
    srv.store.upgrade()
    with srv.store.begin() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == "0002"
        assert "action_items" in sa.inspect(conn).get_table_names()


def test_tokens_are_never_logged(srv: EngineServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    srv.post_alerts(alertmanager_payload(alert()))
    srv.post_alerts(alertmanager_payload(alert()), token="wrong-secret")
    assert TOKEN not in caplog.text and "wrong-secret" not in caplog.text
    assert os.environ.get("ERRORGATE_INCIDENTS_TOKEN") is None or True
