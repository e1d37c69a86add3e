"""Escalation through the on-call chain until acknowledged (API or PagerDuty v3 webhook),
delivered to loopback stand-ins of PagerDuty Events v2, Opsgenie and Slack whose requests are
checked against the vendors' published request schemas."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from errorgate.config import EscalationDeliveryConfig
from errorgate.governance.catalog import load_catalog
from errorgate.governance.oncall import load_oncall
from errorgate.incidents.escalation import Escalator, pagerduty_webhook
from errorgate.incidents.notify import channels
from tests.support.capture_server import CaptureServer
from tests.support.incidents import EngineServer, alert, alertmanager_payload, call, escalation_world

# PagerDuty Events API v2, POST /v2/enqueue request body, transcribed from PagerDuty's published
# OpenAPI document (github.com/PagerDuty/api-schema, reference/events-v2/openapiv3.json); the
# dedup_key rule ("required unless the event_action is trigger") is from its field description.
PAGERDUTY_EVENT = {
    "type": "object",
    "required": ["routing_key", "event_action"],
    "properties": {
        "routing_key": {"type": "string"},
        "event_action": {"enum": ["trigger", "acknowledge", "resolve"]},
        "dedup_key": {"type": "string"},
        "client": {"type": "string"},
        "client_url": {"type": "string"},
        "payload": {
            "type": "object",
            "required": ["summary", "severity", "source"],
            "properties": {
                "summary": {"type": "string", "maxLength": 1024},
                "severity": {"enum": ["critical", "warning", "error", "info"]},
                "source": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
                "component": {"type": "string"},
                "group": {"type": "string"},
                "class": {"type": "string"},
                "custom_details": {"type": "object"},
            },
            "additionalProperties": False,
        },
        "links": {"type": "array"},
        "images": {"type": "array"},
    },
    "additionalProperties": False,
    "if": {"properties": {"event_action": {"const": "trigger"}}},
    "then": {"required": ["payload"]},
    "else": {"required": ["dedup_key"]},
}
# Opsgenie Alert API, POST /v2/alerts: the fields of Opsgenie's CreateAlertPayload (its SDK's
# generated model, github.com/opsgenie/opsgenie-python-sdk docs/CreateAlertPayload.md) with the
# limits of the Alert API documentation (message 130, alias 512, priority P1-P5, ...).
RECIPIENT = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"enum": ["team", "user", "escalation", "schedule"]}},
}
OPSGENIE_CREATE = {
    "type": "object",
    "required": ["message"],
    "properties": {
        "message": {"type": "string", "minLength": 1, "maxLength": 130},
        "alias": {"type": "string", "maxLength": 512},
        "description": {"type": "string", "maxLength": 15000},
        "responders": {"type": "array", "items": RECIPIENT, "maxItems": 50},
        "visibleTo": {"type": "array", "items": RECIPIENT, "maxItems": 50},
        "actions": {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 10},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 20},
        "details": {"type": "object", "additionalProperties": {"type": "string"}},
        "entity": {"type": "string", "maxLength": 512},
        "source": {"type": "string", "maxLength": 100},
        "priority": {"enum": ["P1", "P2", "P3", "P4", "P5"]},
        "user": {"type": "string", "maxLength": 100},
        "note": {"type": "string", "maxLength": 25000},
    },
    "additionalProperties": False,
}
OPSGENIE_ACTION = {
    "type": "object",
    "properties": {"user": {"type": "string"}, "source": {"type": "string"}, "note": {"type": "string"}},
    "additionalProperties": False,
}
SLACK = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1}}}
SECRET = "pd-webhook-secret"


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[EngineServer, CaptureServer, Escalator]]:
    with escalation_world(tmp_path, monkeypatch, slack=True) as (srv, capture, escalator):
        srv.api.routes[("POST", "/api/v1/webhooks/pagerduty")] = pagerduty_webhook(
            srv.engine, SECRET, lambda: None
        )
        yield srv, capture, escalator


def _validate(capture: CaptureServer) -> None:
    for r in capture.requests:
        schema = {"pagerduty": PAGERDUTY_EVENT, "opsgenie": OPSGENIE_CREATE, "opsgenie_ack": OPSGENIE_ACTION,
                  "opsgenie_close": OPSGENIE_ACTION, "slack": SLACK}[r.kind]  # fmt: skip
        jsonschema.validate(r.body, schema)
        if r.kind.startswith("opsgenie"):
            assert r.headers["Authorization"] == "GenieKey og-key"


def test_escalates_level_by_level_and_stops_on_ack(
    world: tuple[EngineServer, CaptureServer, Escalator],
) -> None:
    srv, capture, esc = world
    oncall = load_oncall(None, load_catalog()).now("payments", datetime(2025, 6, 16, 10, tzinfo=UTC))
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()
    [pd] = capture.of("pagerduty")
    assert pd.body["event_action"] == "trigger" and pd.body["dedup_key"] == f"errorgate-incident-{inc['id']}"
    assert pd.body["payload"]["severity"] == "critical"
    assert pd.body["payload"]["custom_details"]["on_call"] == oncall["primary"]
    [og] = capture.of("opsgenie")
    assert og.body["alias"] == pd.body["dedup_key"] and og.body["priority"] == "P1"
    [slack] = capture.of("slack")
    assert pd.body["dedup_key"] in slack.body["text"] and oncall["primary"] in slack.body["text"]

    srv.clock.now += 300
    esc.tick()
    assert len(capture.of("pagerduty")) == 1  # level 1 waits 10 minutes
    srv.clock.now += 301
    esc.tick()
    second = capture.of("pagerduty")[-1]
    assert second.body["payload"]["custom_details"] == {
        "incident": inc["id"], "on_call": oncall["secondary"], "escalation_level": 2}  # fmt: skip
    assert {r.body["dedup_key"] for r in capture.of("pagerduty")} == {pd.body["dedup_key"]}

    assert srv.action(inc["id"], "ack", by="bob").status == 200
    esc.tick()
    srv.clock.now += 3600
    esc.tick()
    actions = [r.body["event_action"] for r in capture.of("pagerduty")]
    assert actions == ["trigger", "trigger", "acknowledge"]
    assert capture.of("opsgenie_ack")[0].path == f"/v2/alerts/{pd.body['dedup_key']}/acknowledge"
    timeline = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body["timeline"]
    assert [e["message"].split(":")[0] for e in timeline if e["kind"] == "escalated"] == [
        "escalation level 1", "escalation level 2"]  # fmt: skip
    srv.post_alerts(alertmanager_payload(alert(status="resolved"), status="resolved"))
    esc.tick()
    assert capture.of("pagerduty")[-1].body["event_action"] == "resolve"
    assert capture.of("opsgenie_close")
    _validate(capture)


def test_the_chain_repeats_then_ends(world: tuple[EngineServer, CaptureServer, Escalator]) -> None:
    srv, capture, esc = world
    srv.post_alerts(alertmanager_payload(alert()))
    for _ in range(12):
        esc.tick()
        srv.clock.now += 16 * 60
    # payments: 3 levels, repeat 1 -> 6 pages, then nothing more
    assert len(capture.of("pagerduty")) == 6
    assert capture.of("pagerduty")[2].body["payload"]["custom_details"]["on_call"] == "payments-lead"
    _validate(capture)


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-PagerDuty-Signature": f"v1=00ff,v1={sig}", "Content-Type": "application/json"}


def test_an_ack_in_pagerduty_stops_escalation(world: tuple[EngineServer, CaptureServer, Escalator]) -> None:
    srv, capture, esc = world
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()
    event = {"event": {"id": "01ABC", "event_type": "incident.acknowledged", "resource_type": "incident",
                       "occurred_at": "2025-06-16T10:03:00Z", "agent": {"summary": "Alice", "type": "user_reference"},
                       "data": {"id": "PINC1", "type": "incident", "status": "acknowledged",
                                "incident_key": f"errorgate-incident-{inc['id']}"}}}  # fmt: skip
    body = json.dumps(event).encode()
    url = f"{srv.url}/api/v1/webhooks/pagerduty"
    assert call("POST", url, raw=body, token=None, headers=_signed(body, "forged")).status == 401
    assert srv.incidents()[0]["status"] == "open"
    assert call("POST", url, raw=body, token=None, headers=_signed(body)).status == 200
    [inc] = srv.incidents()
    assert inc["status"] == "acknowledged"
    srv.clock.now += 3600
    esc.tick()
    assert [r.body["event_action"] for r in capture.of("pagerduty")] == ["trigger", "acknowledge"]
    timeline = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body["timeline"]
    assert any(
        e["kind"] == "acknowledged" and "PagerDuty" in e["message"] and e["actor"] == "Alice"
        for e in timeline
    )


def test_a_missing_channel_secret_is_an_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORGATE_PAGERDUTY_ROUTING_KEY", raising=False)
    with pytest.raises(Exception, match=r"incidents\.escalation\.pagerduty\.routing_key_env"):
        channels(EscalationDeliveryConfig.model_validate({"pagerduty": {}}))


def test_p4_review_items_are_queued_not_paged(world: tuple[EngineServer, CaptureServer, Escalator]) -> None:
    srv, capture, esc = world
    srv.post_alerts(alertmanager_payload(alert(severity="P4", alertname="ErrorgateErrorRateReview")))
    [inc] = srv.incidents()
    esc.tick()
    assert capture.requests == []
    assert inc["status"] == "open" and srv.engine.get(int(inc["id"])).escalation_step == 0
