"""An incident engine on a free loopback port, with a settable clock, for tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from errorgate.config import EscalationDeliveryConfig
from errorgate.governance.catalog import load_catalog
from errorgate.governance.oncall import load_oncall
from errorgate.incidents.engine import Engine
from errorgate.incidents.escalation import Escalator
from errorgate.incidents.http import Api, HttpServer
from errorgate.incidents.notify import channels
from errorgate.incidents.store import Store
from tests.support.capture_server import CaptureServer

TOKEN = "test-token-d0n7-l0g"


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


def call(method: str, url: str, body: Any = None, token: str | None = TOKEN, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text, status, hdrs = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        text, status, hdrs = e.read(), e.code, dict(e.headers)
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text.decode()
    return Reply(status, parsed, hdrs)


def alertmanager_payload(
    *alerts: dict[str, Any],
    group_key: str = '{}:{alertname="ErrorgateErrorRateHigh"}',
    status: str = "firing",
) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "errorgate-incidents",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": list(alerts),
    }


def alert(service: str = "checkout", severity: str = "P1", status: str = "firing", fingerprint: str = "a1",
          starts: str = "2025-06-15T14:00:00Z", first_error: str | None = None, **labels: str) -> dict[str, Any]:  # fmt: skip
    annotations = {"summary": f"{service}: error rate above the alert threshold"}
    if first_error:
        annotations["first_error_at"] = first_error
    return {
        "status": status,
        "labels": {"alertname": "ErrorgateErrorRateHigh", "service": service, "severity": severity,
                   "team": "payments", **labels},
        "annotations": annotations,
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2025-06-15T15:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }  # fmt: skip


class EngineServer:
    def __init__(self, url: str, clock: Clock | None = None, token: str | None = TOKEN) -> None:
        self.clock = clock or Clock()
        self.store = Store(url)
        self.store.upgrade()
        self.engine = Engine(self.store, clock=self.clock)
        self.api = Api(self.engine, token, "ERRORGATE_INCIDENTS_TOKEN")
        self.http = HttpServer(self.api, "127.0.0.1:0")
        self.http.start()
        self.url = self.http.url

    def post_alerts(self, payload: Any, source: str = "alertmanager", token: str | None = TOKEN) -> Reply:
        return call("POST", f"{self.url}/api/v1/alerts/{source}", payload, token=token)

    def incidents(self) -> list[dict[str, Any]]:
        reply = call("GET", f"{self.url}/api/v1/incidents", token=None)
        assert reply.status == 200, reply.body
        return list(reply.body["incidents"])

    def action(self, incident_id: str, action: str, token: str | None = TOKEN, **body: Any) -> Reply:
        return call("POST", f"{self.url}/api/v1/incidents/{incident_id}/{action}", body or {}, token=token)

    def stop(self) -> None:
        self.http.stop()
        self.store.dispose()


@contextmanager
def escalation_world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, slack: bool = False
) -> Iterator[tuple[EngineServer, CaptureServer, Escalator]]:
    """An engine on Monday 16 June 2025 10:00 UTC (12:00 in Berlin, where the payments rotation
    hands over) escalating through the catalog's on-call chain to PagerDuty and Opsgenie (and
    Slack with ``slack``), all delivered to one loopback capture server."""
    capture = CaptureServer().start()
    monkeypatch.setenv("PD_KEY", "R0UT1NGKEY")
    monkeypatch.setenv("OG_KEY", "og-key")
    delivery: dict[str, Any] = {
        "pagerduty": {"url": f"{capture.url}/v2/enqueue", "routing_key_env": "PD_KEY"},
        "opsgenie": {"url": capture.url, "api_key_env": "OG_KEY"},
    }
    if slack:
        monkeypatch.setenv("SLACK_URL", f"{capture.url}/slack/T000/B000")
        delivery["slack"] = {"webhook_url_env": "SLACK_URL"}
    cfg = EscalationDeliveryConfig.model_validate(delivery)
    srv = EngineServer(
        f"sqlite:///{tmp_path / 'i.db'}", clock=Clock(datetime(2025, 6, 16, 10, tzinfo=UTC).timestamp())
    )
    escalator = Escalator(srv.engine, load_oncall(None, load_catalog()), channels(cfg), srv.url)
    yield srv, capture, escalator
    srv.stop()
    capture.stop()
