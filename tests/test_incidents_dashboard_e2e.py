"""The "Incidents and self-healing" dashboard on a real Prometheus that scraped a real incident
engine's own ``/metrics`` (the incident metrics are not the gateway's, so tests/test_promql_e2e.py
cannot prove them and allow-lists them; this test does).

The engine (on a settable clock, so response times are known) takes two rounds of the same story:
a P1 incident across checkout and payments opens 4 minutes after its first error; PagerDuty
refuses the first page and takes the retry 30 s later; Opsgenie refuses both attempts (the engine
gives up); Alertmanager cannot be reached for the silence; someone acknowledges after 90 s and
resolves after 450 s. Two rounds because a series' first sample is Prometheus' baseline: only the
second round shows as a rate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from errorgate.config import EscalationDeliveryConfig, SilenceConfig
from errorgate.dashboards.generate import build_dashboards, iter_queries
from errorgate.governance.catalog import load_catalog
from errorgate.governance.oncall import load_oncall
from errorgate.incidents.escalation import Escalator
from errorgate.incidents.notify import channels
from errorgate.incidents.silences import AlertmanagerSilences, Silencer
from tests.support.capture_server import CaptureServer
from tests.support.incidents import Clock, EngineServer, alert, alertmanager_payload
from tests.support.prometheus import Prometheus, free_port, start_prometheus, substitute_grafana

ENV = "e2e"
VARIABLES = {"env": ENV}
DETECT, ACK, RESOLVE = 240, 90, 450  # engine-clock seconds of each incident's story

# Panels of this dashboard that stay empty on an engine run alone, and why.
EMPTY_ON_PURPOSE = {
    # errorgate_ha_leader is exported only by an engine under ``ha:`` (one election per role);
    # a single engine without ha has no leader to show. tests/test_incidents_ha.py covers the gauge.
    "Incident engine leader": "no ha: configured",
    # errorgate_rollback_notifications_total is the gateway's (its rollback role), not the engine's;
    # tests/test_rollback_incidents.py covers those notifications.
    "Rollback notifications": "the gateway's metric",
}

World = tuple[EngineServer, Escalator, Silencer, CaptureServer]


@contextmanager
def engine_world(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[World]:
    env.setenv("PD_KEY", "R0UT1NGKEY")
    env.setenv("OG_KEY", "og-key")
    capture = CaptureServer().start()
    cfg = EscalationDeliveryConfig.model_validate(
        {"pagerduty": {"url": f"{capture.url}/v2/enqueue", "routing_key_env": "PD_KEY"},
         "opsgenie": {"url": capture.url, "api_key_env": "OG_KEY"},
         "retry": {"attempts": 2, "initial_interval": "30s"}}
    )  # fmt: skip
    srv = EngineServer(
        f"sqlite:///{tmp / 'i.db'}", clock=Clock(datetime(2025, 6, 16, 10, tzinfo=UTC).timestamp())
    )
    escalator = Escalator(
        srv.engine, load_oncall(None, load_catalog()), channels(cfg), srv.url, retry=cfg.retry
    )
    # Nothing listens on this port: every silence call fails to connect.
    unreachable = f"http://127.0.0.1:{free_port()}"
    silencer = Silencer(
        srv.engine, SilenceConfig(alertmanager=unreachable), AlertmanagerSilences(unreachable, None)
    )
    try:
        yield srv, escalator, silencer, capture
    finally:
        srv.stop()
        capture.stop()


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def one_incident(world: World, n: int) -> None:
    srv, esc, silencer, capture = world
    capture.fail_first = {"pagerduty": 1, "opsgenie": 2}
    first_error, starts = _rfc3339(srv.clock.now - DETECT), _rfc3339(srv.clock.now - 60)
    payload = alertmanager_payload(
        alert("checkout", "P1", fingerprint=f"c{n}", starts=starts, first_error=first_error, origin_service="payments"),
        alert("payments", "P2", fingerprint=f"p{n}", starts=starts, first_error=first_error, origin_service="payments"),
        group_key=f'{{}}:{{alertname="ErrorgateErrorRateHigh", round="{n}"}}',
    )  # fmt: skip
    assert srv.post_alerts(payload).status == 200
    [inc] = [i for i in srv.incidents() if i["status"] == "open"]
    esc.tick()  # both channels refuse the first page
    silencer.tick()  # the incident spans two services: silence their minor alerts (unreachable)
    srv.clock.now += 30
    esc.tick()  # PagerDuty takes the retry; Opsgenie refuses the last attempt
    srv.clock.now += ACK - 30
    assert srv.action(inc["id"], "ack", by="bob").status == 200
    srv.clock.now += RESOLVE - ACK
    assert srv.action(inc["id"], "resolve").status == 200
    srv.clock.now += 3600


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One engine story scraped once, shared by the tests below (Prometheus takes seconds)."""
    tmp = tmp_path_factory.mktemp("incidents-dashboard")
    with pytest.MonkeyPatch.context() as env, engine_world(tmp, env) as world:
        target = world[0].url.removeprefix("http://")
        prom = start_prometheus(tmp / "prometheus", [target], target_labels={"env": ENV})
        try:
            prom.wait_for_targets_up()
            one_incident(world, 0)
            prom.wait_for_scrapes(2)  # the baseline of every series
            one_incident(world, 1)
            prom.wait_for_scrapes(2)
            yield prom
        finally:
            prom.stop()


def panels() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for title, _, expr in iter_queries(build_dashboards()["incidents.json"]):
        out.setdefault(title, []).append(substitute_grafana(expr, VARIABLES))
    return out


def values(prom: Prometheus, expr: str) -> dict[tuple[str, ...], float]:
    return {tuple(sorted(r["metric"].values())): float(r["value"][1]) for r in prom.query(expr)}


def test_every_incident_panel_shows_data_from_the_engine(scraped: Prometheus) -> None:
    queries = panels()
    assert set(EMPTY_ON_PURPOSE) <= set(queries), "a documented exception is no longer on the dashboard"
    empty = [f"{title}: {expr}" for title, exprs in queries.items() for expr in exprs
             if title not in EMPTY_ON_PURPOSE and not scraped.query(expr)]  # fmt: skip
    assert empty == []
    # The exceptions are empty for the reason given, not by accident of this run.
    for title in EMPTY_ON_PURPOSE:
        assert all(scraped.query(expr) == [] for expr in queries[title]), title


def test_response_times_show_the_medians_a_responder_lived(scraped: Prometheus) -> None:
    queries = panels()
    # Each panel's first query is the median by severity; the value is interpolated inside the
    # histogram bucket that holds the real time (buckets 30, 60, 120, 300, 600 s...).
    for title, seconds, (low, high) in (
        ("Time to detect", DETECT, (120, 300)),
        ("Time to acknowledge", ACK, (60, 120)),
        ("Time to resolve", RESOLVE, (300, 600)),
    ):
        p50 = values(scraped, queries[title][0])
        assert list(p50) == [("P1",)], (title, p50)  # the incident takes its worst alert's severity
        assert low < p50[("P1",)] <= high, (title, seconds, p50)


def test_paging_panels_show_the_retry_that_got_through_and_the_page_given_up(scraped: Prometheus) -> None:
    queries = panels()
    [retries] = queries["Page retries by outcome"]
    retried = values(scraped, retries)
    # PagerDuty's retry delivered the page; Opsgenie's last attempt failed too.
    assert set(retried) == {("delivered", "pagerduty"), ("failed", "opsgenie")}, retried
    assert all(rate > 0 for rate in retried.values())
    [given_up] = queries["Pages given up"]
    assert set(values(scraped, given_up)) == {("opsgenie",)}
    [silences] = queries["Silence failures"]
    failed = values(scraped, silences)
    assert set(failed) == {("alertmanager",)} and failed[("alertmanager",)] > 0
