"""A real Alertmanager (Debian's prometheus-alertmanager) pages the engine: a firing P1 opens an
incident with its detection time, and `errorgate incidents report` gives the MTTD/MTTA/MTTR that
the incident's own timeline shows."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from errorgate.cli import main
from errorgate.config import default_config_text
from tests.support.alertmanager import start_alertmanager
from tests.support.incidents import TOKEN, EngineServer, call

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(
    ALERTMANAGER is None, reason="Debian package prometheus-alertmanager not installed"
)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, EngineServer]]:
    srv = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=time.time)  # type: ignore[arg-type]
    (tmp_path / "token").write_text(TOKEN)
    config = {
        "route": {"receiver": "engine", "group_by": ["alertname", "service"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "engine", "webhook_configs": [{
            "url": f"{srv.url}/api/v1/alerts/alertmanager", "send_resolved": True,
            "http_config": {"authorization": {"credentials_file": str(tmp_path / "token")}}}]}],
    }  # fmt: skip
    try:
        with start_alertmanager(tmp_path, config) as am:
            yield am.url, srv
    finally:
        srv.stop()


def _post_alert(url: str, starts: datetime, ends: datetime | None, first_error: datetime) -> None:
    alert = {
        "labels": {"alertname": "ErrorgateErrorRateHigh", "service": "checkout", "severity": "P1", "team": "payments"},
        "annotations": {"summary": "checkout: error rate above the alert threshold",
                        "first_error_at": f"{first_error.timestamp():.0f}"},
        "startsAt": starts.isoformat(),
    }  # fmt: skip
    if ends:
        alert["endsAt"] = ends.isoformat()
    req = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps([alert]).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(req, timeout=5).close()


def _wait(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_real_alertmanager_fires_a_p1_and_the_report_matches_the_timeline(
    alertmanager: tuple[str, EngineServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, srv = alertmanager
    now = datetime.now(UTC)
    first_error = now - timedelta(minutes=4)
    _post_alert(url, now - timedelta(minutes=2), None, first_error)
    [inc] = _wait(srv.incidents)
    assert inc["severity"] == "P1" and inc["status"] == "open"
    assert abs(_ts(inc["first_error_at"]) - first_error.timestamp()) <= 0.5  # the annotation, to the second
    detected = _ts(inc["opened_at"])
    assert now.timestamp() - 1 <= detected <= time.time()
    time.sleep(0.3)
    assert srv.action(inc["id"], "ack", by="alice").status == 200
    time.sleep(0.3)
    _post_alert(url, now - timedelta(minutes=2), datetime.now(UTC), first_error)  # resolved
    inc = _wait(lambda: next((i for i in srv.incidents() if i["status"] == "resolved"), None))
    timeline = call("GET", f"{srv.url}/api/v1/incidents/{inc['id']}", token=None).body["timeline"]
    assert [e["kind"] for e in timeline][:3] == ["opened", "alert_firing", "acknowledged"]
    assert timeline[-1]["kind"] == "resolved"

    config = tmp_path / "errorgate.yaml"
    config.write_text(
        default_config_text() + f"\nincidents:\n  store: sqlite:///{tmp_path / 'incidents.db'}\n"
    )
    assert main(["incidents", "report", "--since", "30d", "--format", "json", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = {
        "mttd_seconds": _ts(inc["opened_at"]) - _ts(inc["first_error_at"]),
        "mtta_seconds": _ts(inc["acknowledged_at"]) - _ts(inc["opened_at"]),
        "mttr_seconds": _ts(inc["resolved_at"]) - _ts(inc["opened_at"]),
    }
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, abs=0.002), key
        assert report["by_team"]["payments"][key] == pytest.approx(value, abs=0.002)
    assert report["by_service"]["checkout"]["incidents"] == 1
    metrics = urllib.request.urlopen(f"{srv.url}/metrics", timeout=5).read().decode()
    assert (
        'errorgate_incident_time_to_acknowledge_seconds_count{severity="P1",team="payments"} 1.0' in metrics
    )
    for fmt, marker in (("markdown", "| team | payments | 1 |"), ("html", "<svg")):
        assert main(["incidents", "report", "--format", fmt, "--config", str(config)]) == 0
        assert marker in capsys.readouterr().out
