"""A page that fails is retried with backoff under the same dedup key, each attempt on the
timeline; after the last attempt the engine gives up (metric + audit row); a failing channel
never delays the next escalation level. The vendor is a loopback capture server that fails its
first N requests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from errorgate.config import EscalationDeliveryConfig
from errorgate.governance.catalog import load_catalog
from errorgate.governance.oncall import load_oncall
from errorgate.incidents.escalation import Escalator
from errorgate.incidents.notify import channels
from tests.support.capture_server import CaptureServer
from tests.support.incidents import Clock, EngineServer, alert, alertmanager_payload, call

World = tuple[EngineServer, CaptureServer, Escalator]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    capture = CaptureServer().start()
    monkeypatch.setenv("PD_KEY", "R0UT1NGKEY")
    monkeypatch.setenv("SLACK_URL", f"{capture.url}/slack/T000/B000")
    cfg = EscalationDeliveryConfig.model_validate(
        {"pagerduty": {"url": f"{capture.url}/v2/enqueue", "routing_key_env": "PD_KEY"},
         "slack": {"webhook_url_env": "SLACK_URL"},
         "retry": {"attempts": 4, "initial_interval": "30s", "max_interval": "2m"}}
    )  # fmt: skip
    srv = EngineServer(
        f"sqlite:///{tmp_path / 'i.db'}", clock=Clock(datetime(2025, 6, 16, 10, tzinfo=UTC).timestamp())
    )
    escalator = Escalator(
        srv.engine, load_oncall(None, load_catalog()), channels(cfg), srv.url, retry=cfg.retry
    )
    yield srv, capture, escalator
    srv.stop()
    capture.stop()


def _timeline(srv: EngineServer, incident_id: str) -> list[dict[str, str]]:
    return list(call("GET", f"{srv.url}/api/v1/incidents/{incident_id}", token=None).body["timeline"])


def _metric(srv: EngineServer, name: str) -> str:
    text = call("GET", f"{srv.url}/metrics", token=None).body
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def _run(srv: EngineServer, esc: Escalator, seconds: int, step: int = 5) -> None:
    """The worker's loop: a tick every ``step`` seconds of the engine's clock."""
    for _ in range(seconds // step):
        srv.clock.now += step
        esc.tick()


def test_a_failed_page_is_retried_with_backoff_and_the_same_dedup_key(world: World) -> None:
    srv, capture, esc = world
    capture.fail_first = {"pagerduty": 2}
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()
    assert len(capture.of("pagerduty")) == 1
    _run(srv, esc, 25)
    assert len(capture.of("pagerduty")) == 1  # backoff: the first retry waits 30 s
    _run(srv, esc, 10)
    assert len(capture.of("pagerduty")) == 2  # fails again; the next waits 60 s
    _run(srv, esc, 50)  # up to 85 s after the first page
    assert len(capture.of("pagerduty")) == 2
    _run(srv, esc, 10)
    pages = capture.of("pagerduty")
    assert len(pages) == 3
    assert {p.body["dedup_key"] for p in pages} == {f"errorgate-incident-{inc['id']}"}
    assert {p.body["payload"]["custom_details"]["escalation_level"] for p in pages} == {1}
    _run(srv, esc, 300)
    assert len(capture.of("pagerduty")) == 3  # delivered: no more retries until level 2
    assert len(capture.of("slack")) == 1  # the channel that worked is not re-sent
    retries = [e["message"] for e in _timeline(srv, inc["id"]) if e["kind"] == "page_retry"]
    assert len(retries) == 2
    assert "attempt 2 of 4 failed (pagerduty: HTTP 503)" in retries[0]
    assert "paged" in retries[1] and "via pagerduty on attempt 3 of 4" in retries[1]
    assert 'errorgate_incident_page_retries_total{channel="pagerduty",outcome="failed"} 1.0' in _metric(
        srv, "errorgate_incident_page_retries_total"
    )
    assert _metric(srv, "errorgate_incident_pages_given_up_total{") == ""


def test_after_the_last_attempt_the_engine_gives_up_and_escalation_is_not_delayed(world: World) -> None:
    srv, capture, esc = world
    capture.fail_first = {"pagerduty": 100}
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()
    _run(srv, esc, 595)  # 30 + 60 + 120 s of backoff: all four attempts are spent by now
    assert len(capture.of("pagerduty")) == 4
    kinds = [e["kind"] for e in _timeline(srv, inc["id"])]
    assert kinds.count("page_failed") == 1
    given_up = next(e["message"] for e in _timeline(srv, inc["id"]) if e["kind"] == "page_failed")
    assert "gave up paging" in given_up and "after 4 attempts" in given_up
    assert 'errorgate_incident_pages_given_up_total{channel="pagerduty"} 1.0' in _metric(
        srv, "errorgate_incident_pages_given_up_total"
    )
    assert any(
        a["action"] == "page:pagerduty" and a["outcome"] == "gave-up" and a["target"] == inc["id"]
        for a in srv.engine.audit_trail()
    )
    # Level 2 is due 10 minutes after level 1, failing PagerDuty or not.
    assert len(capture.of("slack")) == 1
    _run(srv, esc, 5)
    assert len(capture.of("slack")) == 2 and "level 2" in capture.of("slack")[-1].body["text"]
    assert capture.of("pagerduty")[-1].body["payload"]["custom_details"]["escalation_level"] == 2


def test_an_acknowledged_incident_is_not_paged_again(world: World) -> None:
    srv, capture, esc = world
    capture.fail_first = {"pagerduty": 1}
    srv.post_alerts(alertmanager_payload(alert()))
    [inc] = srv.incidents()
    esc.tick()
    assert srv.action(inc["id"], "ack", by="bob").status == 200
    _run(srv, esc, 300)
    actions = [r.body["event_action"] for r in capture.of("pagerduty")]
    assert actions == ["trigger", "acknowledge"]
    assert not [e for e in _timeline(srv, inc["id"]) if e["kind"] in ("page_retry", "page_failed")]
