"""Silences in Grafana too (issue 17): while an incident spans two or more services, the engine
holds back the P3/P4 alerts of those services in Alertmanager (a real one) and in Grafana's
built-in Alertmanager (the loopback Grafana stub, which checks every body against Grafana's
published OpenAPI text), expires both when the incident resolves, and puts each on the timeline
naming where. One target being down does not stop the other: it is counted and on the timeline."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from errorgate.cli import CommandError
from errorgate.commands.incidents import _silence_jobs
from errorgate.config import (
    ConfigError,
    GrafanaSilenceConfig,
    SilenceConfig,
    default_config_text,
    load_config,
)
from errorgate.incidents.silences import AlertmanagerSilences, GrafanaSilences, Silencer
from tests.support.alertmanager import ALERTMANAGER, MISSING, start_alertmanager
from tests.support.grafana_stub import GrafanaStub
from tests.support.incidents import EngineServer, alert, alertmanager_payload
from tests.support.prometheus import free_port

TOKEN = "glsa_s1lence_t0ken"
needs_alertmanager = pytest.mark.skipif(ALERTMANAGER is None, reason=MISSING)


@pytest.fixture
def grafana() -> Iterator[GrafanaStub]:
    with GrafanaStub(token=TOKEN) as stub:
        yield stub


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[EngineServer]:
    server = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=time.time)  # type: ignore[arg-type]
    yield server
    server.stop()


def _now(minutes: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _two_service_incident(srv: EngineServer) -> int:
    payload = alertmanager_payload(
        alert("checkout", "P1", fingerprint="c1", starts=_now(-3), origin_service="payments"),
        alert("payments", "P2", fingerprint="p1", starts=_now(-3), origin_service="payments"),
    )
    assert srv.post_alerts(payload).status == 200
    [inc] = srv.incidents()
    return int(inc["id"])


def _silencer(srv: EngineServer, am_url: str | None, grafana_url: str | None) -> Silencer:
    settings: dict[str, Any] = {"alertmanager": am_url}
    targets: list[Any] = []
    if am_url:
        targets.append(AlertmanagerSilences(am_url, None))
    if grafana_url:
        settings["grafana"] = {"url": grafana_url}
        targets.append(GrafanaSilences(grafana_url, TOKEN))
    return Silencer(srv.engine, SilenceConfig(**settings), targets)


def _entries(srv: EngineServer, incident_id: int, kind: str) -> list[str]:
    return [e["message"] for e in srv.engine.timeline(incident_id) if e["kind"] == kind]


def _failures(srv: EngineServer, target: str) -> float:
    text = generate_latest(srv.engine.registry).decode()
    for line in text.splitlines():
        if line.startswith(f'errorgate_incident_silence_failures_total{{target="{target}"}}'):
            return float(line.split()[-1])
    return 0.0


@needs_alertmanager
def test_minor_alerts_are_silenced_in_alertmanager_and_grafana_until_the_incident_resolves(
    srv: EngineServer, grafana: GrafanaStub, tmp_path: Path
) -> None:
    incident_id = _two_service_incident(srv)
    with start_alertmanager(tmp_path) as am:
        silencer = _silencer(srv, am.url, grafana.url)
        silencer.tick()
        silencer.tick()  # nothing changed: no second silence anywhere
        [am_silence] = am.silences()
        [grafana_silence] = grafana.active_silences()
        assert am_silence["status"]["state"] == "active"
        # The same silence in both: P3/P4 of the incident's services, the incident in the comment.
        assert grafana_silence["matchers"] == am_silence["matchers"]
        assert grafana_silence["matchers"][0]["value"] == "checkout|payments"
        assert f"incident {incident_id}" in grafana_silence["comment"]
        silenced = _entries(srv, incident_id, "silenced")
        assert len(silenced) == 2
        assert any("in Alertmanager" in m and am_silence["id"] in m for m in silenced)
        assert any("in Grafana" in m and grafana_silence["id"] in m for m in silenced)

        assert srv.action(str(incident_id), "resolve", by="alice").status == 200
        silencer.tick()
        assert am.silences()[0]["status"]["state"] == "expired"
    assert grafana.active_silences() == []
    expired = _entries(srv, incident_id, "silence_expired")
    assert sorted(expired) == sorted(
        [
            f"expired Alertmanager silence {am_silence['id']}",
            f"expired Grafana silence {grafana_silence['id']}",
        ]
    )
    assert srv.engine.get(incident_id).silences == []
    assert grafana.violations == [] and grafana.unexpected == []
    writes = [(c.method, c.path, c.status) for c in grafana.writes()]
    assert writes == [
        ("POST", "/api/alertmanager/grafana/api/v2/silences", 202),
        ("DELETE", f"/api/alertmanager/grafana/api/v2/silence/{grafana_silence['id']}", 200),
    ]
    assert all(c.headers["authorization"] == f"Bearer {TOKEN}" for c in grafana.calls)


def test_grafana_alone_is_enough_and_a_grown_incident_replaces_its_silence(
    srv: EngineServer, grafana: GrafanaStub
) -> None:
    incident_id = _two_service_incident(srv)
    silencer = _silencer(srv, None, grafana.url)
    silencer.tick()
    more = alert("frontend", "P2", fingerprint="f1", starts=_now(-1), origin_service="payments")
    assert srv.post_alerts(alertmanager_payload(more)).status == 200
    silencer.tick()
    [active] = grafana.active_silences()
    assert active["matchers"][0]["value"] == "checkout|frontend|payments"
    assert len(grafana.state.silences) == 2  # the first one expired, not left behind
    assert [s["services"] for s in srv.engine.get(incident_id).silences] == [
        ["checkout", "frontend", "payments"]
    ]
    assert grafana.violations == [] and grafana.unexpected == []


@needs_alertmanager
def test_grafana_down_does_not_stop_the_alertmanager_silence_and_is_counted_and_on_the_timeline(
    srv: EngineServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    incident_id = _two_service_incident(srv)
    down = f"http://127.0.0.1:{free_port()}"
    with start_alertmanager(tmp_path) as am, caplog.at_level(logging.WARNING, "errorgate.incidents"):
        silencer = _silencer(srv, am.url, down)
        silencer.tick()
        silencer.tick()
        [silence] = am.silences()
        assert silence["status"]["state"] == "active"
    assert _failures(srv, "grafana") == 2 and _failures(srv, "alertmanager") == 0
    [failed] = _entries(srv, incident_id, "silence_failed")  # once per outage, not once per tick
    assert "Grafana" in failed and "incidents.silence.grafana" in failed
    assert [s["target"] for s in srv.engine.get(incident_id).silences] == ["alertmanager"]
    assert TOKEN not in caplog.text
    assert all(TOKEN not in e["message"] for e in srv.engine.timeline(incident_id))


def test_alertmanager_down_does_not_stop_the_grafana_silence(srv: EngineServer, grafana: GrafanaStub) -> None:
    incident_id = _two_service_incident(srv)
    silencer = _silencer(srv, f"http://127.0.0.1:{free_port()}", grafana.url)
    silencer.tick()
    assert len(grafana.active_silences()) == 1
    assert _failures(srv, "alertmanager") == 1
    [failed] = _entries(srv, incident_id, "silence_failed")
    assert "Alertmanager" in failed


def test_grafana_refusing_the_token_names_the_key_not_the_token(
    srv: EngineServer, grafana: GrafanaStub
) -> None:
    incident_id = _two_service_incident(srv)
    silencer = Silencer(
        srv.engine,
        SilenceConfig(grafana=GrafanaSilenceConfig(url=grafana.url)),
        [GrafanaSilences(grafana.url, "wr0ng-t0ken")],
    )
    silencer.tick()
    [failed] = _entries(srv, incident_id, "silence_failed")
    assert "incidents.silence.grafana" in failed and "HTTP 401" in failed
    assert "wr0ng-t0ken" not in failed


def _config(tmp_path: Path, silence: str) -> Any:
    path = tmp_path / "c.yaml"
    path.write_text(default_config_text() + "\nincidents:\n  silence:\n" + silence)
    return load_config(str(path))


def test_the_grafana_config_key_is_validated_and_names_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, srv: EngineServer
) -> None:
    with pytest.raises(ConfigError, match=r"incidents\.silence\.grafana\.url"):
        _config(tmp_path, "    grafana: {url: grafana:3000}\n")
    with pytest.raises(ConfigError, match=r"incidents\.silence\.grafana\.tokn_env"):
        _config(tmp_path, "    grafana: {url: 'http://127.0.0.1:3000', tokn_env: X}\n")
    with pytest.raises(ConfigError, match=r"incidents\.silence.*alertmanager.*grafana"):
        _config(tmp_path, "    min_services: 2\n")
    config = _config(tmp_path, "    grafana: {url: 'http://127.0.0.1:3000', token_env: EG_TEST_GRAFANA}\n")
    monkeypatch.delenv("EG_TEST_GRAFANA", raising=False)
    with pytest.raises(CommandError, match=r"incidents\.silence\.grafana\.token_env.*EG_TEST_GRAFANA"):
        _silence_jobs(config, None)
    monkeypatch.setenv("EG_TEST_GRAFANA", TOKEN)
    assert len(_silence_jobs(config, srv.engine)) == 1
