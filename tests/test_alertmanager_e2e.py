"""The generated alertmanager.yml in a real Alertmanager (Debian's prometheus-alertmanager) on
loopback, delivering to a capture server that speaks PagerDuty Events v2 and Opsgenie.

The config under test is derived from the committed file by ``derive_test_config`` only: integration
URLs and secret files point at the capture server / tmp files, waits are scaled down, and the
maintenance mute timing is dropped (it would make results depend on the weekday).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.cli import main as cli_main
from errorgate.config import parse_duration
from tests.support.capture_server import Captured, CaptureServer
from tests.support.prometheus import free_port

ALERT_RULES = Path(__file__).resolve().parents[1] / "alert_rules"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or ""
SECRET_VALUE = "4111 1111 1111 1111 jane.doe@example.com"  # stands in for a raw payload value

pytestmark = pytest.mark.skipif(
    not ALERTMANAGER, reason="prometheus-alertmanager is not installed (make system-deps)"
)


def derive_test_config(config: dict[str, Any], capture_url: str, secrets: Path) -> dict[str, Any]:
    """Test-only: same routes/receivers/inhibition, local endpoints, waits / 120 (min 1s)."""
    cfg = copy.deepcopy(config)
    (secrets / "slack-url").write_text(f"{capture_url}/slack\n")
    cfg["global"] = {
        "resolve_timeout": "5m",
        "pagerduty_url": f"{capture_url}/v2/enqueue",
        "opsgenie_api_url": f"{capture_url}/",
        "slack_api_url_file": str(secrets / "slack-url"),
    }
    cfg["templates"] = [str(ALERT_RULES / t) for t in config["templates"]]
    cfg.pop("time_intervals", None)

    def scale(value: str) -> str:
        return f"{max(1, round(parse_duration(value) / 120))}s"  # escalate_after 10m -> 5s

    def walk(route: dict[str, Any], top: bool) -> None:
        route.pop("mute_time_intervals", None)
        if "group_wait" in route:
            route["group_wait"] = "1s" if top else scale(route["group_wait"])
        if top:
            route["group_interval"] = "1s"
        if "repeat_interval" in route:
            route["repeat_interval"] = "1h"  # no repeats during a test: counts stay exact
        for child in route.get("routes", []):
            walk(child, False)

    walk(cfg["route"], True)
    for receiver in cfg["receivers"]:
        for pd in receiver.get("pagerduty_configs", []):
            key = secrets / Path(pd["routing_key_file"]).name
            key.write_text(f"rk-{key.stem}")
            pd["routing_key_file"] = str(key)
        for og in receiver.get("opsgenie_configs", []):
            (secrets / "opsgenie.key").write_text(
                "og-test-key"
            )  # AM 0.25 sends the file verbatim: no newline
            og["api_key_file"] = str(secrets / "opsgenie.key")
        for wh in receiver.get("webhook_configs", []):
            wh["url"] = f"{capture_url}/webhook/{receiver['name']}"
            token = secrets / Path(wh["http_config"]["authorization"]["credentials_file"]).name
            token.write_text("engine-token")  # the incident engine's API token
            wh["http_config"]["authorization"]["credentials_file"] = str(token)
    return cfg


class AM:
    def __init__(self, url: str) -> None:
        self.url = url
        self.started: dict[tuple[tuple[str, str], ...], datetime] = {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
        return json.loads(text) if text.strip() else None

    def post(self, labels: dict[str, str], resolved: bool = False) -> None:
        # startsAt matters: Alertmanager skips a group_wait (and so an escalation delay) that
        # has already elapsed since the alert started firing. Re-posts keep the first start.
        now = datetime.now(UTC)
        key = tuple(sorted(labels.items()))
        started = self.started.pop(key, now) if resolved else self.started.setdefault(key, now)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": f"{labels['service']} failing", "description": SECRET_VALUE},
            "startsAt": started.isoformat(),
            "generatorURL": "http://prometheus.test/graph",
        }
        alert["endsAt"] = (now if resolved else now + timedelta(minutes=10)).isoformat()
        self.call("POST", "/api/v2/alerts", [alert])


@pytest.fixture(scope="module")
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture(scope="module")
def am(tmp_path_factory: pytest.TempPathFactory, capture: CaptureServer) -> Iterator[AM]:
    base = tmp_path_factory.mktemp("alertmanager")
    secrets = base / "secrets"
    secrets.mkdir()
    config = yaml.safe_load((ALERT_RULES / "alertmanager.yml").read_text())
    (base / "am.yml").write_text(yaml.safe_dump(derive_test_config(config, capture.url, secrets)))
    port = free_port()
    log = (base / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={base / 'am.yml'}",
            f"--storage.path={base / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(
                    "alertmanager did not start: " + (base / "am.log").read_text()[-2000:]
                ) from None
            time.sleep(0.1)
    try:
        yield AM(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _pd(action: str, routing_key: str | None = None, service: str = "checkout") -> Callable[[Captured], bool]:
    def match(r: Captured) -> bool:
        body = r.body
        return (
            body.get("event_action") == action
            and (routing_key is None or body.get("routing_key") == routing_key)
            and body["payload"]["component"] == service
        )

    return match


def _resolve_of(dedup_key: str) -> Callable[[Captured], bool]:
    return lambda r: r.body.get("event_action") == "resolve" and r.body.get("dedup_key") == dedup_key


def _slack_title(r: Captured) -> str:
    return str(r.body["attachments"][0]["title"])


def test_p1_pages_primary_opsgenie_slack_escalates_and_resolves_with_stable_dedup(
    am: AM, capture: CaptureServer
) -> None:
    labels = {
        "alertname": "ErrorgateErrorRateHigh",
        "severity": "P1",
        "team": "payments",
        "service": "checkout",
        "kind": "persistent",
        "category": "timeout",
    }
    for _ in range(3):  # Prometheus re-sends firing alerts every evaluation: no duplicate pages
        am.post(labels)
    primary = capture.wait_for("pagerduty", _pd("trigger", "rk-pagerduty-payments-primary"))[0].body
    assert primary["payload"]["severity"] == "critical"
    assert (
        primary["payload"]["summary"]
        == "[P1] checkout: ErrorgateErrorRateHigh (persistent/timeout) team payments"
    )
    assert primary["payload"]["group"] == "payments" and primary["payload"]["class"] == "persistent"
    og = capture.wait_for("opsgenie", lambda r: r.body["message"].startswith("[P1] checkout"))[0]
    assert og.headers["Authorization"] == "GenieKey og-test-key"
    assert og.body["priority"] == "P1"
    assert og.body["responders"] == [{"type": "team", "name": "payments"}]
    slack = capture.wait_for("slack", lambda r: _slack_title(r).startswith("[P1] checkout"))[0]
    assert slack.body["channel"] == "#payments-oncall"
    # Not acknowledged (no silence): secondary after escalate_after, then the lead.
    secondary = capture.wait_for("pagerduty", _pd("trigger", "rk-pagerduty-payments-secondary"))[0]
    lead = capture.wait_for("pagerduty", _pd("trigger", "rk-pagerduty-payments-lead"))[0]
    assert secondary.body["payload"]["summary"] == primary["payload"]["summary"]
    # One incident, one dedup key, whichever on-call level's PagerDuty service it reaches.
    assert secondary.body["dedup_key"] == lead.body["dedup_key"] == primary["dedup_key"]

    am.post(labels, resolved=True)
    resolves = capture.wait_for("pagerduty", _resolve_of(primary["dedup_key"]), count=3)
    assert {r.body["dedup_key"] for r in resolves} == {primary["dedup_key"]}
    assert sorted(r.body["routing_key"] for r in resolves) == [
        "rk-pagerduty-payments-lead",
        "rk-pagerduty-payments-primary",
        "rk-pagerduty-payments-secondary",
    ]
    close = capture.wait_for("opsgenie_close")[0]
    assert close.query.get("identifierType") == ["alias"]
    assert close.path == f"/v2/alerts/{og.body['alias']}/close"

    # The same problem firing again is the same incident in PagerDuty/Opsgenie.
    am.post(labels)
    triggers = capture.wait_for("pagerduty", _pd("trigger", "rk-pagerduty-payments-primary"), count=2)
    assert triggers[1].body["dedup_key"] == primary["dedup_key"]
    assert (
        capture.wait_for("opsgenie", lambda r: r.body["message"].startswith("[P1] checkout"), count=2)[
            1
        ].body["alias"]
        == og.body["alias"]
    )
    assert len(capture.of("pagerduty", _pd("trigger", "rk-pagerduty-payments-primary"))) == 2
    am.post(labels, resolved=True)
    capture.wait_for("pagerduty", _resolve_of(primary["dedup_key"]), count=4)
    capture.wait_for("opsgenie_close", count=2)
    # Templates print labels only: the raw annotation value never leaves Alertmanager.
    leaks = [r.raw for r in capture.requests if "4111" in r.raw or "jane.doe" in r.raw]
    assert not leaks, leaks[0]


def test_acknowledging_by_silence_stops_the_escalation(
    am: AM, capture: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {
        "alertname": "ErrorgateErrorBudgetBurn",
        "severity": "P1",
        "team": "payments",
        "service": "payments",
        "kind": "slo",
        "category": "error_budget",
    }
    am.post(labels)
    capture.wait_for("pagerduty", _pd("trigger", "rk-pagerduty-payments-primary", service="payments"))
    # The primary acknowledges in Alertmanager: a silence on the incident's alerts.
    args = [
        "alerts",
        "suppress",
        "--alertmanager",
        am.url,
        "--service",
        "payments",
        "--severities",
        "P1",
        "--duration",
        "1h",
        "--incident",
        "ack",
    ]
    assert cli_main(args) == 0
    silence_id = capsys.readouterr().out.strip()
    # The lead would be paged 10s (2 x escalate_after / 120) after the start; wait past that.
    capture.wait_for("slack", lambda r: _slack_title(r).startswith("[P1] payments"))
    time.sleep(11)
    assert not capture.of("pagerduty", _pd("trigger", "rk-pagerduty-payments-secondary", service="payments"))
    assert not capture.of("pagerduty", _pd("trigger", "rk-pagerduty-payments-lead", service="payments"))
    am.call("DELETE", f"/api/v2/silence/{silence_id}")
    am.post(labels, resolved=True)


def test_minor_alerts_of_services_in_an_incident_are_inhibited(am: AM, capture: CaptureServer) -> None:
    base = {"team": "storefront", "kind": "persistent", "category": "validation"}
    am.post({"alertname": "ErrorgateServiceInIncident", "severity": "P2", "service": "frontend", **base})
    time.sleep(0.5)  # the marker must be in the store before the minor alerts' groups flush
    am.post({"alertname": "ErrorgateErrorRateReview", "severity": "P3", "service": "frontend", **base})
    am.post({"alertname": "ErrorgateErrorRateReview", "severity": "P3", "service": "catalog", **base})
    am.post({"alertname": "ErrorgateErrorRateHigh", "severity": "P2", "service": "frontend", **base})
    # The unrelated service's P3 and the incident service's P2 are delivered...
    capture.wait_for("slack", lambda r: _slack_title(r).startswith("[P3] catalog"))
    [hook] = capture.wait_for("webhook", lambda r: r.body.get("groupLabels", {}).get("service") == "catalog")
    assert hook.headers["Authorization"] == "Bearer engine-token"  # the engine refuses webhooks without it
    capture.wait_for("opsgenie", lambda r: r.body["message"].startswith("[P2] frontend"))
    # ... by then the inhibited P3 group had several flushes (group_interval 1s) and sent nothing.
    time.sleep(3)
    assert not capture.of("slack", lambda r: _slack_title(r).startswith("[P3] frontend"))
    assert not capture.of("webhook", lambda r: r.body.get("groupLabels", {}).get("service") == "frontend")
    assert not [r for r in capture.requests if "ErrorgateServiceInIncident" in r.raw]
    # Incident over: the held-back alert is delivered.
    am.post(
        {"alertname": "ErrorgateServiceInIncident", "severity": "P2", "service": "frontend", **base},
        resolved=True,
    )
    capture.wait_for("slack", lambda r: _slack_title(r).startswith("[P3] frontend"))
    capture.wait_for("webhook", lambda r: r.body.get("groupLabels", {}).get("service") == "frontend")


def test_alerts_suppress_creates_and_expires_a_silence(
    am: AM, capture: CaptureServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(
        [
            "alerts",
            "suppress",
            "--alertmanager",
            am.url,
            "--service",
            "orders-db-proxy",
            "--incident",
            "INC-42",
            "--duration",
            "30m",
        ]
    )
    assert rc == 0
    silence_id = capsys.readouterr().out.strip()
    silence = am.call("GET", f"/api/v2/silence/{silence_id}")
    assert silence["status"]["state"] == "active"
    assert "INC-42" in silence["comment"]
    matchers = {(m["name"], m["value"], m["isRegex"], m.get("isEqual", True)) for m in silence["matchers"]}
    assert ("service", "orders-db-proxy", False, True) in matchers
    assert ("severity", "P3|P4", True, True) in matchers
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
    assert timedelta(minutes=29) < ends - datetime.now(UTC) <= timedelta(minutes=30)

    labels = {
        "alertname": "ErrorgateErrorRateReview",
        "team": "payments",
        "service": "orders-db-proxy",
        "kind": "persistent",
        "category": "timeout",
    }
    am.post({**labels, "severity": "P4"})
    am.post({**labels, "severity": "P2"})
    capture.wait_for("opsgenie", lambda r: r.body["message"].startswith("[P2] orders-db-proxy"))
    time.sleep(2)
    assert not capture.of(
        "webhook", lambda r: r.body.get("groupLabels", {}).get("service") == "orders-db-proxy"
    )

    assert cli_main(["alerts", "suppress", "--alertmanager", am.url, "--expire", silence_id]) == 0
    assert am.call("GET", f"/api/v2/silence/{silence_id}")["status"]["state"] == "expired"
    # With the silence gone the P4 alert goes out on the next flush.
    capture.wait_for("webhook", lambda r: r.body.get("groupLabels", {}).get("service") == "orders-db-proxy")


def test_alerts_suppress_reports_unreachable_alertmanager(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    rc = cli_main(
        ["alerts", "suppress", "--alertmanager", f"http://127.0.0.1:{port}", "--service", "checkout"]
    )
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--alertmanager" in err[0] and "cannot connect" in err[0]
