"""Acks flowing back from Opsgenie: its outgoing webhook integration posts alert actions
(``Acknowledge``, ``Close``) for the alert whose alias is our dedup key; the engine acknowledges
or resolves the incident and its escalation stops, so the next level is never paged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from errorgate.cli import service_roles
from errorgate.config import parse_config
from errorgate.incidents.escalation import Escalator, opsgenie_webhook
from tests.support.capture_server import CaptureServer
from tests.support.gateway import gateway_yaml
from tests.support.incidents import EngineServer, alert, alertmanager_payload, call, escalation_world

SECRET = "og-callback-t0ken"


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EngineServer, CaptureServer, Escalator]]:
    with escalation_world(tmp_path, monkeypatch) as (srv, capture, escalator):
        srv.api.routes[("POST", "/api/v1/webhooks/opsgenie")] = opsgenie_webhook(
            srv.engine, SECRET, lambda: None
        )
        yield srv, capture, escalator


def callback(action: str, alias: str, username: str = "alice@example.com") -> dict[str, Any]:
    """The body Opsgenie's Webhook integration posts for an alert action."""
    return {
        "action": action,
        "alert": {"alertId": "44f717bf-44bd-11c9-44c7-2d0cf1d07b23", "message": "[P1] ErrorgateErrorRateHigh",
                  "tags": ["errorgate", "P1"], "tinyId": "42", "entity": "checkout", "alias": alias,
                  "createdAt": 1750068000000, "updatedAt": 1750068180000000000, "username": username,
                  "userId": "a8b4d3cd-1f8e-4b3c-b1a8-0ad7b4a5a1d1", "source": "errorgate"},
        "source": {"name": "web", "type": "web"},
        "integrationName": "errorgate", "integrationId": "8418d193-2dab-4490-b331-8c02cdd196b7",
        "integrationType": "Webhook",
    }  # fmt: skip


def post(srv: EngineServer, body: Any, token: str | None = SECRET) -> Any:
    headers = {"X-Errorgate-Token": token} if token is not None else {}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call("POST", f"{srv.url}/api/v1/webhooks/opsgenie", raw=raw, token=None, headers=headers)


def test_an_acknowledge_in_opsgenie_stops_the_escalation(
    world: tuple[EngineServer, CaptureServer, Escalator],
) -> None:
    srv, capture, esc = world
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()  # level 1 paged
    key = f"errorgate-incident-{inc['id']}"
    assert post(srv, callback("Acknowledge", key)).status == 200
    assert srv.incidents()[0]["status"] == "acknowledged"
    srv.clock.now += 3600  # long past level 1's 10 minutes
    esc.tick()
    esc.tick()
    pages = [r.body["event_action"] for r in capture.of("pagerduty")]
    assert pages == ["trigger", "acknowledge"]  # level 2 was never paged; PagerDuty heard the ack
    assert len(capture.of("opsgenie")) == 1
    timeline = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body["timeline"]
    [ack] = [e for e in timeline if e["kind"] == "acknowledged"]
    assert "via Opsgenie" in ack["message"] and ack["actor"] == "alice"  # the name, not the address
    assert not [e for e in timeline if e["kind"] == "escalated" and "level 2" in e["message"]]

    assert post(srv, callback("Close", key)).status == 200
    assert srv.incidents()[0]["status"] == "resolved"


def test_a_bad_or_missing_token_is_refused_and_changes_nothing(
    world: tuple[EngineServer, CaptureServer, Escalator],
) -> None:
    srv, _, _ = world
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    key = f"errorgate-incident-{inc['id']}"
    wrong = post(srv, callback("Acknowledge", key), token="guess")
    assert wrong.status == 401 and wrong.body["error"] == "X-Errorgate-Token: does not match"
    missing = post(srv, callback("Acknowledge", key), token=None)
    assert missing.status == 401 and "X-Errorgate-Token: missing" in missing.body["error"]
    assert srv.incidents()[0]["status"] == "open"
    denied = [a for a in srv.engine.audit_trail() if a["action"] == "webhook:opsgenie"]
    assert [a["outcome"] for a in denied] == ["denied", "denied"]


def test_malformed_and_foreign_callbacks(world: tuple[EngineServer, CaptureServer, Escalator]) -> None:
    srv, _, _ = world
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    before = len(srv.engine.timeline(int(inc["id"])))
    assert post(srv, b"not json").status == 400
    no_alias = callback("Acknowledge", "x")
    del no_alias["alert"]["alias"]
    reply = post(srv, no_alias)
    assert reply.status == 400 and reply.body["error"].startswith("alert.alias")
    assert post(srv, {"alert": {"alias": "x"}}).body["error"].startswith("action")
    # Alerts errorgate did not raise, and actions that are not acks, are taken and ignored.
    assert post(srv, callback("Acknowledge", "someone-elses-alert")).status == 202
    assert post(srv, callback("AddNote", f"errorgate-incident-{inc['id']}")).status == 202
    assert srv.incidents()[0]["status"] == "open"
    assert len(srv.engine.timeline(int(inc["id"]))) == before


def test_incidents_serve_offers_the_callback_when_its_token_is_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OG_KEY", "og-key")
    monkeypatch.setenv("OG_CALLBACK", SECRET)
    incidents = ("incidents: {endpoint: 127.0.0.1:0, escalation: {opsgenie: {url: http://127.0.0.1:9, "
                 "api_key_env: OG_KEY, webhook_token_env: OG_CALLBACK}}}\n")  # fmt: skip
    text = gateway_yaml(tmp_path / "data", exporter="  debug: {verbosity: basic}", exporter_id="debug")
    [role] = service_roles(parse_config(text + incidents))
    role.start()
    try:
        reply = call("POST", f"{role.url}/api/v1/webhooks/opsgenie", raw=b"{}", token=None,
                     headers={"X-Errorgate-Token": SECRET})  # fmt: skip
        assert reply.status == 400 and reply.body["error"].startswith("action")
    finally:
        role.stop()
