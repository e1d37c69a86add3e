"""Every PromQL expression of the dashboards and alert rules, run on a real Prometheus that scraped
a real errorgate fed with labelled scenario traffic:

- persistent: ``catalog`` fails on its database in every 1-minute bucket (telemetry time);
- transient: ``checkout`` calls ``payments``, the first attempt fails, the retry succeeds;
- cascade: ``frontend`` -> ``payments`` -> ``orders-db-proxy`` fails at the proxy, three services at once;
- uncatalogued: ``legacy-billing`` (not in services.yaml) times out now and then;
- healthy: ``batch-reports`` and ``patient-records`` (whose logs carry an e-mail address to redact).

Grafana's macros and template variables are substituted the way Grafana does; every expression must
return data (except the few metrics in ``NO_SERIES_IN_SCENARIO``), and the key panels must show the
expected values (error rate of failing services > 0, of healthy ones exactly 0).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from errorgate.dashboards.generate import build_dashboards, iter_queries
from tests.support.gateway import gateway_yaml, running_gateway
from tests.support.prometheus import Prometheus, prometheus_factory, substitute_grafana  # noqa: F401
from tests.test_classify_support import CLIENT, SERVER, S, log, new_id, trace_batch

ROOT = Path(__file__).resolve().parents[1]
ENV = "e2e"
ROUNDS = 8
HEALTHY = ("batch-reports", "patient-records")
FAILING = ("catalog", "checkout", "frontend", "payments", "orders-db-proxy", "legacy-billing")
RETRIED_ONLY = ("checkout",)  # its failing attempts succeeded on retry: no failed request

# Metrics with no series in this scenario, and why. Keep this tiny: every entry is a panel
# the scenario cannot prove.
# (Counters of known label sets exist at 0 from start-up, so dead letters, processor and
# redaction failures are checked like the rest.)
NO_SERIES_IN_SCENARIO = {
    "errorgate_legal_hold_items_total": "no legal hold is configured",
    "errorgate_shared_state_up": "the scenario runs one replica, without the redis extension",
    "errorgate_shared_state_fallbacks_total": "the scenario runs one replica, without the redis extension",
    "errorgate_shared_state_round_trips_total": "the scenario runs one replica, without the redis extension",
    # The incident dashboard's metrics: this scenario runs a gateway, not the incident engine
    # (tests/test_incidents_dashboard_e2e.py checks that dashboard against a real engine).
    **dict.fromkeys(
        (
            "errorgate_incident_time_to_detect_seconds_bucket",
            "errorgate_incident_time_to_acknowledge_seconds_bucket",
            "errorgate_incident_time_to_resolve_seconds_bucket",
            "errorgate_incident_page_retries_total",
            "errorgate_incident_pages_given_up_total",
            "errorgate_incident_silence_failures_total",
            "errorgate_ha_leader",
        ),
        "served by the incident engine's own /metrics (errorgate incidents serve), not the gateway's",
    ),
    "errorgate_rollback_notifications_total": "the scenario has no deploy verdicts, so no rollback",
}


# ---------------------------------------------------------------- scenario traffic


def _persistent(at: float) -> list[S]:
    """catalog's database refuses connections (same fingerprint; the IP varies)."""
    t, server, client = new_id(), new_id(), new_id()
    return [
        S("catalog", "GET /products", t, server, kind=SERVER, end=at + 0.5, error=True,
          attrs={"http.route": "/products", "http.response.status_code": 500}),
        S("catalog", "SELECT products", t, client, parent=server, kind=CLIENT, end=at + 0.45, error=True,
          attrs={"db.system": "postgresql", "server.address": "catalog-db"},
          exception=("ConnectionRefusedError", f"connection refused to 10.0.0.{int(at) % 200}:5432", "")),
    ]  # fmt: skip


def _transient(at: float) -> list[S]:
    """checkout -> payments: 503, then the retry succeeds."""
    t, root, first, retry = new_id(), new_id(), new_id(), new_id()
    return [
        S("checkout", "POST /orders", t, root, kind=SERVER, end=at + 1,
          attrs={"http.route": "/orders", "http.response.status_code": 200}),
        S("checkout", "POST", t, first, parent=root, kind=CLIENT, end=at + 0.5, error=True,
          attrs={"http.response.status_code": 503, "server.address": "payments"}),
        S("checkout", "POST", t, retry, parent=root, kind=CLIENT, end=at + 0.9,
          attrs={"http.response.status_code": 200, "http.request.resend_count": 1, "server.address": "payments"}),
    ]  # fmt: skip


def _cascade(at: float, failing: bool = True) -> list[S]:
    """frontend -> payments -> orders-db-proxy, which fails on its own (the origin)."""
    t = new_id()
    chain = [
        ("frontend", "GET /checkout"),
        ("payments", "POST /charge"),
        ("orders-db-proxy", "GET /orders/{id}"),
    ]
    spans: list[S] = []
    parent = 0
    for depth, (service, route) in enumerate(chain):
        server = new_id()
        last = depth == len(chain) - 1
        spans.append(
            S(service, route, t, server, parent=parent, kind=SERVER, end=at + 1 - depth * 0.1, error=failing,
              attrs={"http.route": route, "http.response.status_code": 500 if failing else 200},
              exception=("KeyError", "order index corrupted for shard 7", "") if failing and last else None)
        )  # fmt: skip
        parent = server
        if not last:
            client = new_id()
            spans.append(
                S(service, "POST", t, client, parent=server, kind=CLIENT, end=at + 0.95 - depth * 0.1, error=failing,
                  attrs={"http.response.status_code": 500 if failing else 200, "server.address": chain[depth + 1][0]})
            )  # fmt: skip
            parent = client
    return spans


def _uncatalogued(at: float) -> list[S]:
    return [S("legacy-billing", "POST /invoices", new_id(), new_id(), kind=SERVER, end=at + 0.7, error=True,
              attrs={"http.route": "/invoices", "http.response.status_code": 504},
              exception=("TimeoutError", "upstream timed out after 30s", ""))]  # fmt: skip


def _healthy(service: str, at: float) -> list[S]:
    return [S(service, "GET /report", new_id(), new_id(), kind=SERVER, end=at + 0.3,
              attrs={"http.route": "/report", "http.response.status_code": 200})]  # fmt: skip


def round_request(r: int, t0: float) -> Any:
    at = t0 + r * 60  # one 1-minute bucket of telemetry time per round
    spans = (
        _persistent(at) + _persistent(at + 20) + _transient(at + 5) + _cascade(at + 10) + _cascade(at + 30)
    )
    spans += _cascade(at + 40, failing=False) + _uncatalogued(at + 50)
    for service in HEALTHY:
        spans += _healthy(service, at) + _healthy(service, at + 30)
    return trace_batch(spans).request


def logs_request(r: int, t0: float) -> ExportLogsServiceRequest:
    from errorgate.attributes import set_value

    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    set_value(rl.resource.attributes, "service.name", "patient-records")
    rl.scope_logs.add().log_records.extend(
        [
            log(
                f"password reset link sent to alice.{r}@example.com",
                t0 + r * 60 + 15,
                severity=9,
                **{"enduser.id": f"u-{r}"},
            )
        ]
    )
    return request


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    from tests.support.prometheus import start_prometheus

    tmp = tmp_path_factory.mktemp("promql-e2e")
    config = gateway_yaml(
        tmp / "data",
        exporter=f"  file: {{path: {tmp / 'out'}}}",
        exporter_id="file",
        processors="{classify: {}, sample: {decision_wait: 1s, healthy_keep_probability: 1.0}, "
        "redact: {}, encrypt: {}, retention: {}}",
        pipeline_processors="[classify, sample, redact, encrypt, retention]",
        metrics_processors="[]",
    )
    with running_gateway(config) as gateway:
        prom = start_prometheus(tmp / "prometheus", [gateway.metrics_endpoint], target_labels={"env": ENV})
        try:
            prom.wait_for_targets_up()
            send_scenario(gateway, prom)
            yield prom
        finally:
            prom.stop()


def send_malformed(http_endpoint: str) -> None:
    """A request the HTTP receiver must refuse (rejected_requests{reason="malformed"})."""
    req = urllib.request.Request(
        f"http://{http_endpoint}/v1/traces",
        data=b"\x0a\xff\xff not protobuf",
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(req, timeout=5)


def send_scenario(gateway: Any, prom: Prometheus) -> None:
    t0 = (time.time() // 60) * 60 - ROUNDS * 60
    channel = grpc.insecure_channel(gateway.grpc_endpoint)
    traces, logs = TraceServiceStub(channel), LogsServiceStub(channel)
    try:
        for r in range(ROUNDS):
            request = round_request(r, t0)
            traces.Export(request, timeout=10)
            # A counter's first sample is its baseline, so duplicates and refusals happen twice:
            # once to create the series, once to increase it.
            if r in (1, ROUNDS - 3):
                traces.Export(request, timeout=10)  # a re-sent batch: acknowledged, not forwarded twice
            if r in (0, ROUNDS - 2):
                send_malformed(gateway.http_endpoint)
            logs.Export(logs_request(r, t0), timeout=10)
            # Rates need increases between scrapes, so every round lands in its own scrape.
            prom.wait_for_scrapes(1)
    finally:
        channel.close()
    # The assembler holds traces for decision_wait; wait until the last round is classified and scraped.
    prom.wait_until(f'sum(errorgate_requests_total{{service="batch-reports"}}) >= {2 * ROUNDS}', timeout=30)
    prom.wait_until("sum(errorgate_rejected_requests_total) > 0", timeout=10)
    prom.wait_for_scrapes(2)


# ---------------------------------------------------------------- helpers


def variables(prom: Prometheus) -> dict[str, Any]:
    """The template variables as a user leaves them: env = the scenario's, team/service = All."""
    teams = prom.label_values("team", f'errorgate_service_info{{env=~"{ENV}"}}')
    services = prom.label_values("service", f'errorgate_service_info{{env=~"{ENV}"}}')
    return {"env": ENV, "team": teams, "service": services}


def metric_of(expr: str) -> set[str]:
    return set(re.findall(r"\b(errorgate_[a-z_]+)", expr))


def panel_queries() -> list[tuple[str, str, str]]:
    return [
        (m["title"], title, expr) for m in build_dashboards().values() for title, _, expr in iter_queries(m)
    ]


def alert_expressions() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "alert_rules" / "prometheus").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group.get("rules", []):
                out.append((f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def by(prom: Prometheus, expr: str, label: str, v: dict[str, Any]) -> dict[str, float]:
    return prom.values(substitute_grafana(expr, v), label)


def find(title: str) -> str:
    exprs = [expr for _, t, expr in panel_queries() if t == title]
    assert exprs, f"no panel titled {title!r}"
    return exprs[0]


# ---------------------------------------------------------------- tests


def test_variables_list_the_catalog_teams_and_services(scenario: Prometheus) -> None:
    v = variables(scenario)
    assert {"payments", "storefront", "platform"} <= set(v["team"])
    assert set(HEALTHY) | set(FAILING) <= set(v["service"])
    # The service variable follows the team selection.
    storefront = scenario.label_values("service", 'errorgate_service_info{env=~"e2e", team=~"storefront"}')
    assert set(storefront) >= {"catalog", "frontend"} and "payments" not in storefront


def test_every_dashboard_expression_returns_data(scenario: Prometheus) -> None:
    v = variables(scenario)
    empty = []
    for dashboard, title, expr in panel_queries():
        rows = scenario.query(substitute_grafana(expr, v))
        if not rows and not metric_of(expr) <= set(NO_SERIES_IN_SCENARIO):
            empty.append(f"{dashboard} / {title}: {expr}")
    assert empty == []


def test_allow_listed_metrics_really_have_no_series(scenario: Prometheus) -> None:
    # If one of them gets data, it belongs in the checked set: shrink the allow-list.
    for metric in NO_SERIES_IN_SCENARIO:
        assert scenario.query(metric) == [], metric


def test_error_rate_is_positive_for_failing_and_zero_for_healthy_services(scenario: Prometheus) -> None:
    v = variables(scenario)
    rate = by(scenario, find("Error rate by service"), "service", v)
    for service in FAILING:
        assert rate.get(service, 0) > 0, (service, rate)
    for service in HEALTHY:
        assert rate[service] == 0, (service, rate)  # present as 0, not missing
    # The ratio is failed requests / requests (the SLO's bad events), so it never exceeds 1 even
    # though catalog fails every request with two error spans (server + database client); and
    # checkout's only failures are attempts that succeeded on retry: its users saw no failure.
    ratio = by(scenario, find("Error ratio by service"), "service", v)
    assert all(ratio[s] == 0 for s in (*HEALTHY, *RETRIED_ONLY))
    assert all(ratio[s] > 0 for s in FAILING if s not in RETRIED_ONLY)
    assert 0.9 <= ratio["catalog"] <= 1.0
    assert all(r <= 1.0 for r in ratio.values())


def test_kinds_cascades_and_retries(scenario: Prometheus) -> None:
    v = variables(scenario)
    kinds = by(scenario, find("Errors by kind"), "kind", v)
    assert {"persistent", "transient", "cascading"} <= set(kinds)
    assert set(kinds) <= {"transient", "intermittent", "persistent", "cascading"}
    persistent = scenario.values(
        'sum by (service) (errorgate_errors_total{env="e2e", kind="persistent"})', "service"
    )
    # catalog, the cascade's origin and legacy-billing fail in every bucket.
    assert set(persistent) == {"catalog", "orders-db-proxy", "legacy-billing"}
    cascades = scenario.query(substitute_grafana(find("Cascade errors originated vs received"), v))
    roles = {(r["metric"]["service"], r["metric"]["role"]) for r in cascades}
    assert ("orders-db-proxy", "origin") in roles
    assert {("frontend", "propagated"), ("payments", "propagated")} <= roles
    received = scenario.query(substitute_grafana(find("Received cascades by origin service"), v))
    # catalog's failures start in its database (a peer, not a service of its own).
    assert {(r["metric"]["service"], r["metric"]["origin_service"]) for r in received} >= {
        ("frontend", "orders-db-proxy"),
        ("payments", "orders-db-proxy"),
        ("catalog", "catalog-db"),
    }
    assert {r["metric"]["service"] for r in received} <= {"frontend", "payments", "catalog"}
    retried = scenario.query(substitute_grafana(find("Retried operations by outcome"), v))
    assert {(r["metric"]["service"], r["metric"]["outcome"]) for r in retried} == {("checkout", "succeeded")}
    transient = by(scenario, find("Transient share of errors"), "service", v)
    assert transient["checkout"] == pytest.approx(1.0)


def test_team_filter_narrows_the_error_panels(scenario: Prometheus) -> None:
    v = variables(scenario)
    v["team"] = ["platform"]
    v["service"] = scenario.label_values("service", 'errorgate_service_info{env=~"e2e", team=~"platform"}')
    rate = by(scenario, find("Error rate by service"), "service", v)
    # Uncatalogued services belong to the catalog's default owner (platform).
    assert set(rate) == {"batch-reports", "patient-records", "legacy-billing"}
    assert rate["batch-reports"] == rate["patient-records"] == 0 and rate["legacy-billing"] > 0


def test_pipeline_and_privacy_panels(scenario: Prometheus) -> None:
    v = variables(scenario)
    received = by(scenario, find("Received items by signal"), "signal", v)
    assert received["traces"] > 0 and received["logs"] > 0
    exported = scenario.query(substitute_grafana(find("Exported items"), v))
    assert {r["metric"]["exporter"] for r in exported} == {"file"}
    duplicates = by(scenario, find("Duplicate batches"), "signal", v)
    assert duplicates["traces"] > 0
    rejected = by(scenario, find("Rejected requests"), "reason", v)
    # Every reason is charted from start-up (at 0); the scenario's one malformed request shows.
    assert rejected["malformed"] > 0 and all(n == 0 for r, n in rejected.items() if r != "malformed")
    redacted = by(scenario, find("Redactions by entity type"), "entity_type", v)
    assert redacted.get("EMAIL_ADDRESS", 0) > 0, redacted
    assert by(scenario, find("Fail-closed events"), "", v) == {"": 0.0}
    encrypted = scenario.query(substitute_grafana(find("Values encrypted"), v))
    assert {(r["metric"]["service"], r["metric"]["signal"]) for r in encrypted} == {
        ("patient-records", "logs")
    }


def test_an_unknown_env_shows_nothing(scenario: Prometheus) -> None:
    v = {**variables(scenario), "env": "production"}
    assert scenario.query(substitute_grafana(find("Error rate by service"), v)) == []


def _selectors(expr: str) -> set[tuple[str, str]]:
    """(metric, matchers) of every errorgate selector in an expression."""
    return {(m, sel or "") for m, sel in re.findall(r"\b(errorgate_[a-z_]+)(\{[^}]*\})?", expr)}


CASCADE = ("frontend", "payments", "orders-db-proxy")


def _may_be_empty(metric: str, matchers: str) -> bool:
    """Selectors whose emptiness is the expected outcome of the scenario."""
    service = re.search(r'service="([^"]+)"', matchers)
    if metric in NO_SERIES_IN_SCENARIO:
        return True
    if (
        service
        and service.group(1) in HEALTHY
        and metric in ("errorgate_errors_total", "errorgate_active_incident_services")
    ):
        return True  # healthy services have no error series at all (asserted below)
    if (
        service
        and service.group(1) in (*HEALTHY, *RETRIED_ONLY)
        and metric == "errorgate_failed_requests_total"
    ):
        return True  # no request of theirs failed
    # Only services inside the multi-service incident get the membership gauge.
    in_cascade = service is not None and service.group(1) in CASCADE
    return metric == "errorgate_active_incident_services" and not in_cascade


def test_every_alert_rule_expression_runs_and_its_inputs_have_data(scenario: Prometheus) -> None:
    rules = alert_expressions()
    if not rules:
        pytest.skip("alert_rules/prometheus/*.rules.yml not generated yet")
    missing = []
    for name, expr in rules:
        scenario.query(expr)  # PromQLError on a syntax or type error
        for metric, matchers in _selectors(expr):
            if not scenario.query(f"count({metric}{matchers})") and not _may_be_empty(metric, matchers):
                missing.append(f"{name}: {metric}{matchers}")
    assert missing == [], "\n".join(missing)
    for service in HEALTHY:
        assert scenario.query(f'errorgate_errors_total{{service="{service}"}}') == []


def test_burn_rate_alert_fires_for_the_failing_service_only(scenario: Prometheus) -> None:
    burn = [(n, e) for n, e in alert_expressions() if "ErrorgateErrorBudgetBurn" in n]
    if not burn:
        pytest.skip("no burn-rate rules generated yet")
    firing = {row["metric"]["service"] for _, expr in burn for row in scenario.query(expr)}
    # catalog fails every request; healthy services never fail.
    assert "catalog" in firing
    assert firing.isdisjoint(HEALTHY)
