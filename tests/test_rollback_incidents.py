"""A rollback lands on the timeline of the open incident of its service, in a real incident
engine (SQLite, loopback HTTP, its own API and token): once per rollback however often the
verdict is judged, only on that service's incidents, and a note that cannot be delivered is
counted and reported but does not stop the rollback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from errorgate.processors.deploys.rollback import LocalLedger, RollbackTrigger
from errorgate.processors.deploys.settings import DeploysConfig, RollbackConfig
from errorgate.processors.deploys.store import VersionStore
from tests.support.incidents import TOKEN, EngineServer, alert, alertmanager_payload, call
from tests.test_rollback import T0, Audit, Capture, bad_deploy, evaluate

TOKEN_ENV = "ERRORGATE_INCIDENTS_TOKEN"


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Stands for the deploy system the rollback's own action calls."""
    c = Capture()
    yield c
    c.server.shutdown()


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EngineServer]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}")
    server.post_alerts(alertmanager_payload(alert("checkout", fingerprint="a"), group_key="g1"))
    server.post_alerts(alertmanager_payload(alert("search", "P2", fingerprint="b"), group_key="g2"))
    yield server
    server.stop()


def _trigger(
    capture_url: str, engine_url: str
) -> tuple[RollbackTrigger, Audit, DeploysConfig, CollectorRegistry]:
    deploys = DeploysConfig(
        rollback=RollbackConfig(
            enabled=True,
            actions=[{"kind": "webhook", "url": f"{capture_url}/hooks/rollback"}],
            incidents={"url": engine_url, "token_env": TOKEN_ENV},
        )
    )
    audit, registry = Audit(), CollectorRegistry()
    trigger = RollbackTrigger(
        deploys.rollback, LocalLedger(), audit, wall=lambda: T0 + 200, registry=registry
    )
    return trigger, audit, deploys, registry


def _timeline(engine: EngineServer, service: str) -> list[dict[str, Any]]:
    (inc,) = [i for i in engine.incidents() if i["services"] == [service]]
    return list(call("GET", f"{engine.url}/api/v1/incidents/{inc['id']}", token=None).body["timeline"])


def _notes(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value(
        "errorgate_rollback_notifications_total", {"target": "incidents", "outcome": outcome}
    )
    return value or 0.0


def test_rollback_is_on_the_open_incident_timeline_once(capture: Capture, engine: EngineServer) -> None:
    trigger, audit, deploys, registry = _trigger(capture.url, engine.url)
    store = VersionStore(deploys)
    bad_deploy(store)
    assert evaluate(trigger, store, deploys, times=4) == 1

    rollbacks = [e for e in _timeline(engine, "checkout") if e["kind"] == "rollback"]
    assert len(rollbacks) == 1
    assert rollbacks[0]["actor"] == "errorgate-rollback"
    assert "checkout 2.0" in rollbacks[0]["message"] and "1.0" in rollbacks[0]["message"]
    assert "failure ratio" in rollbacks[0]["message"]  # why, from the verdict
    assert [e for e in _timeline(engine, "search") if e["kind"] == "rollback"] == []

    (record,) = audit.records
    assert record["incidents"]["ok"] is True and record["incidents"]["incidents"] == ["1"]
    assert _notes(registry, "ok") == 1 and _notes(registry, "failed") == 0
    assert TOKEN not in json.dumps(record) and TOKEN not in json.dumps(trigger.reports)


def test_a_note_that_fails_is_counted_and_the_rollback_still_fires(
    capture: Capture, engine: EngineServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong-token")
    trigger, audit, deploys, registry = _trigger(capture.url, engine.url)
    store = VersionStore(deploys)
    bad_deploy(store)
    assert evaluate(trigger, store, deploys, times=2) == 1
    assert len(capture.by_path("/hooks/rollback")) == 1  # the rollback itself went out
    assert [e for e in _timeline(engine, "checkout") if e["kind"] == "rollback"] == []
    assert audit.records[0]["incidents"] == {"ok": False, "status": 401, "incidents": []}
    assert _notes(registry, "failed") == 1 and _notes(registry, "ok") == 0


def test_no_open_incident_is_not_a_failure(capture: Capture, engine: EngineServer) -> None:
    trigger, audit, deploys, registry = _trigger(capture.url, engine.url)
    store = VersionStore(deploys)
    bad_deploy(store, service="pricing")
    assert evaluate(trigger, store, deploys) == 1
    assert audit.records[0]["incidents"] == {"ok": True, "status": 200, "incidents": []}
    assert _notes(registry, "ok") == 1


def test_service_events_need_the_token_and_a_known_kind(engine: EngineServer) -> None:
    url = f"{engine.url}/api/v1/services/checkout/events"
    assert call("POST", url, {"kind": "rollback", "text": "x"}, token=None).status == 401
    assert call("POST", url, {"kind": "rollback", "text": "x"}, token="nope").status == 401
    bad = call("POST", url, {"kind": "page", "text": "x"})
    assert bad.status == 400 and "kind" in bad.body["error"]
    assert call("POST", url, {"kind": "rollback"}).status == 400
    assert [e for e in _timeline(engine, "checkout") if e["kind"] == "rollback"] == []
    ok = call("POST", url, {"kind": "deploy", "text": "checkout 2.1 deployed", "by": "ci"})
    assert ok.status == 200 and ok.body == {"incidents": ["1"]}
    (entry,) = [e for e in _timeline(engine, "checkout") if e["kind"] == "deploy"]
    assert entry["actor"] == "ci" and entry["message"] == "checkout 2.1 deployed"
