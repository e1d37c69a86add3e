"""P4 and review alerts reach the incident engine's review queue, not a webhook nobody runs:
every webhook receiver of the generated alertmanager.yml posts to the engine's Alertmanager
endpoint with its API token from a file (tests/test_alert_rules.py routes P4 to them)."""

from __future__ import annotations

from pathlib import Path

import yaml

AM = Path(__file__).resolve().parent.parent / "alert_rules" / "alertmanager.yml"


def test_webhook_receivers_post_to_the_engine_with_its_token() -> None:
    config = yaml.safe_load(AM.read_text())
    hooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert hooks and "review-tickets" not in AM.read_text()
    for hook in hooks:
        assert hook["url"].endswith(":9466/api/v1/alerts/alertmanager")
        assert hook["http_config"]["authorization"]["credentials_file"].endswith("/errorgate-incidents-token")
        assert hook["send_resolved"] is True
