"""Automatic silences: while an incident spans two or more services, a real Alertmanager holds
back the P3/P4 alerts of those services; the silence is expired when the incident resolves, and
both are on the incident's timeline."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from errorgate.config import SilenceConfig
from errorgate.incidents.silences import AlertmanagerSilences, Silencer
from tests.support.alertmanager import ALERTMANAGER, MISSING, Alertmanager, start_alertmanager
from tests.support.incidents import EngineServer, alert, alertmanager_payload, call

pytestmark = pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)


@pytest.fixture
def am(tmp_path: Path) -> Iterator[Alertmanager]:
    with start_alertmanager(tmp_path) as running:
        yield running


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[EngineServer]:
    server = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=time.time)  # type: ignore[arg-type]
    yield server
    server.stop()


def _silencer(srv: EngineServer, url: str, **settings: Any) -> Silencer:
    config = SilenceConfig(alertmanager=url, **settings)
    return Silencer(srv.engine, config, AlertmanagerSilences(url, None))


def _now(minutes: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _minor(service: str, name: str = "CatalogLatencyReview") -> dict[str, Any]:
    return {"labels": {"alertname": name, "service": service, "severity": "P4", "team": "storefront"},
            "startsAt": _now(-1)}  # fmt: skip


def _two_service_incident(srv: EngineServer) -> str:
    payload = alertmanager_payload(
        alert("checkout", "P1", fingerprint="c1", starts=_now(-3), origin_service="payments"),
        alert("payments", "P2", fingerprint="p1", starts=_now(-3), origin_service="payments"),
    )
    assert srv.post_alerts(payload).status == 200
    [inc] = srv.incidents()
    assert inc["services"] == ["checkout", "payments"]
    return str(inc["id"])


def _kinds(srv: EngineServer, incident_id: str) -> list[str]:
    timeline = call("GET", f"{srv.url}/api/v1/incidents/{incident_id}", token=None).body["timeline"]
    return [e["kind"] for e in timeline]


def test_minor_alerts_of_the_incidents_services_are_silenced_until_it_resolves(
    am: Alertmanager, srv: EngineServer
) -> None:
    am.post_alerts(_minor("checkout"), _minor("search", "SearchReview"))
    incident_id = _two_service_incident(srv)
    silencer = _silencer(srv, am.url)
    silencer.tick()
    [silence] = am.silences()
    assert silence["status"]["state"] == "active"
    assert f"incident {incident_id}" in silence["comment"]
    # What the on-call engineer notices: checkout's P4 is held back, a bystander's is not.
    held = am.alert_state("CatalogLatencyReview")
    assert held["state"] == "suppressed" and held["silencedBy"] == [silence["id"]]
    assert am.alert_state("SearchReview")["state"] == "active"
    silencer.tick()  # nothing changed: no second silence
    assert len(am.silences()) == 1
    assert _kinds(srv, incident_id).count("silenced") == 1

    assert srv.action(incident_id, "resolve", by="alice").status == 200
    silencer.tick()
    [silence] = am.silences()
    assert silence["status"]["state"] == "expired"
    assert am.alert_state("CatalogLatencyReview")["state"] == "active"
    kinds = _kinds(srv, incident_id)
    assert kinds.index("silenced") < kinds.index("resolved") < kinds.index("silence_expired")
    assert srv.engine.get(int(incident_id)).silences == []


def test_a_growing_incident_gets_a_silence_covering_every_service(
    am: Alertmanager, srv: EngineServer
) -> None:
    incident_id = _two_service_incident(srv)
    silencer = _silencer(srv, am.url)
    silencer.tick()
    more = alert("frontend", "P2", fingerprint="f1", starts=_now(-1), origin_service="payments")
    assert srv.post_alerts(alertmanager_payload(more)).status == 200
    silencer.tick()
    states = {s["status"]["state"]: s for s in am.silences()}
    assert set(states) == {"active", "expired"}
    assert states["active"]["matchers"][0]["value"] == "checkout|frontend|payments"
    assert [s["services"] for s in srv.engine.get(int(incident_id)).silences] == [
        ["checkout", "frontend", "payments"]
    ]


def test_no_silence_below_min_services_or_for_a_minor_incident(am: Alertmanager, srv: EngineServer) -> None:
    single = alert("checkout", "P1", fingerprint="c1", starts=_now(-3))
    minor = alertmanager_payload(
        alert("search", "P3", fingerprint="s1", starts=_now(-3), origin_service="search"),
        alert("catalog", "P3", fingerprint="k1", starts=_now(-3), origin_service="search"),
        group_key="g2",
    )
    assert srv.post_alerts(alertmanager_payload(single)).status == 200
    assert srv.post_alerts(minor).status == 200
    _silencer(srv, am.url).tick()
    assert am.silences() == []
    # min_services is the config key that decides.
    _silencer(srv, am.url, min_services=1).tick()
    [silence] = am.silences()
    assert silence["matchers"][0]["value"] == "checkout"


def test_a_silenced_minor_alert_does_not_keep_the_incident_open(am: Alertmanager, srv: EngineServer) -> None:
    payload = alertmanager_payload(
        alert("checkout", "P1", fingerprint="c1", starts=_now(-3), origin_service="payments"),
        alert("payments", "P4", fingerprint="p4", starts=_now(-3), origin_service="payments"),
    )
    assert srv.post_alerts(payload).status == 200
    [inc] = srv.incidents()
    _silencer(srv, am.url).tick()
    # The P1 resolves; Alertmanager will never deliver the silenced P4's resolve.
    resolved = alert(
        "checkout", "P1", status="resolved", fingerprint="c1", starts=_now(-3), origin_service="payments"
    )
    assert srv.post_alerts(alertmanager_payload(resolved, status="resolved")).status == 200
    assert srv.engine.get(int(inc["id"])).status == "resolved"


def test_alertmanager_down_is_logged_and_nothing_recorded(
    srv: EngineServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    incident_id = _two_service_incident(srv)
    from tests.support.prometheus import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, "errorgate.incidents"):
        _silencer(srv, url).tick()
    assert "incidents.silence.alertmanager" in caplog.text and "cannot connect" in caplog.text
    assert "silenced" not in _kinds(srv, incident_id)


def test_serve_refuses_a_silence_url_that_is_not_http(tmp_path: Path) -> None:
    from errorgate.cli import CommandError
    from errorgate.commands.incidents import _silence_jobs
    from errorgate.config import default_config_text, load_config

    path = tmp_path / "c.yaml"
    path.write_text(default_config_text() + "\nincidents:\n  silence:\n    alertmanager: localhost:9093\n")
    with pytest.raises(CommandError, match=r"incidents\.silence\.alertmanager"):
        _silence_jobs(load_config(str(path)), None)
