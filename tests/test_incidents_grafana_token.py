"""Grafana's webhook contact point carries the engine's API token: the generated provisioning
posts to the engine's Grafana route with ``authorization_scheme``/``authorization_credentials``
(Grafana's webhook settings; the credentials a ``$__file{...}`` Grafana reads on its host), and
the engine refuses Grafana webhooks without that token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.alert_rules.grafana import build_grafana_provisioning
from tests.support.incidents import TOKEN, EngineServer, alert, call

ROOT = Path(__file__).resolve().parents[1]
TOKEN_FILE = "/etc/alertmanager/secrets/errorgate-incidents-token"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[EngineServer]:
    server = EngineServer(f"sqlite:///{tmp_path / 'i.db'}")
    yield server
    server.stop()


def _grafana_payload(service: str = "frontend") -> dict[str, Any]:
    """Grafana alerting's webhook body (Alertmanager's shape plus Grafana's own fields)."""
    return {
        "receiver": "payments-webhook", "status": "firing", "orgId": 1, "groupKey": "{}/{}:{}",
        "version": "1", "title": "[FIRING:1]", "state": "alerting", "message": "", "truncatedAlerts": 0,
        "alerts": [{**alert(service, "P2"), "fingerprint": "", "values": {"A": 1}, "silenceURL": ""}],
    }  # fmt: skip


def _webhook_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [p for p in points if p["type"] == "webhook"]
    assert found, "the generated Grafana provisioning has no webhook contact point"
    return found


def test_generated_webhook_contact_points_send_the_token_to_the_grafana_route() -> None:
    api = build_grafana_provisioning()
    committed = yaml.safe_load((ROOT / "alert_rules/grafana/contact-points.yaml").read_text())
    file_points = [r for cp in committed["contactPoints"] for r in cp["receivers"]]
    for point in _webhook_points(api["contact_points"]) + _webhook_points(file_points):
        settings = point["settings"]
        assert settings["url"].endswith("/api/v1/alerts/grafana"), settings
        assert settings["authorization_scheme"] == "Bearer"
        assert settings["authorization_credentials"] == f"$__file{{{TOKEN_FILE}}}"


def test_a_request_as_grafana_sends_it_from_the_generated_settings_is_accepted(
    srv: EngineServer, tmp_path: Path
) -> None:
    settings = _webhook_points(build_grafana_provisioning()["contact_points"])[0]["settings"]
    # What Grafana does with the settings: expand $__file{...}, then "<scheme> <credentials>".
    secret = tmp_path / "errorgate-incidents-token"
    secret.write_text(TOKEN)
    path = re.fullmatch(r"\$__file\{(.+)\}", settings["authorization_credentials"])
    assert path is not None and path.group(1) == TOKEN_FILE
    header = f"{settings['authorization_scheme']} {secret.read_text()}"
    url = srv.url + re.sub(r"^https?://[^/]+", "", settings["url"])
    reply = call(
        settings["httpMethod"], url, _grafana_payload(), token=None, headers={"Authorization": header}
    )
    assert reply.status == 200, reply.body
    assert [i["services"] for i in srv.incidents()] == [["frontend"]]


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_the_engine_refuses_grafana_webhooks_without_the_token(srv: EngineServer, token: str | None) -> None:
    reply = srv.post_alerts(_grafana_payload(), source="grafana", token=token)
    assert reply.status == 401
    assert "Bearer" in reply.body["error"]
    assert srv.incidents() == []
    assert any(
        a["action"] == "webhook:grafana" and a["outcome"] == "denied" for a in srv.engine.audit_trail()
    )
