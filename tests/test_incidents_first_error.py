"""The time of an incident's first error travels from classify to the engine: classify's
``errorgate_first_error_timestamp_seconds{service}`` gauge, the ``first_error_at`` annotation of
errorgate's Prometheus alert rules (evaluated by promtool in tests/test_alert_rules.py, fixture
"two kinds that only together exceed the alert threshold"), and the engine's MTTD."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from errorgate.alert_rules.prometheus_rules import FIRST_ERROR_AT
from errorgate.incidents.webhooks import parse_alerts
from tests.support.incidents import alert, alertmanager_payload
from tests.test_classify_support import T0, S, make_classify, new_id, run, samples, trace_batch

RULES = Path(__file__).resolve().parent.parent / "alert_rules" / "prometheus"
GAUGE = "errorgate_first_error_timestamp_seconds"


def _gauge(tel: object) -> dict[str, float]:
    return {labels["service"]: value for labels, value in samples(tel, GAUGE)}  # type: ignore[arg-type]


def _fail(service: str, end: float) -> object:
    return S(service, "POST /orders", new_id(), new_id(), end=end, error=True,
             attrs={"http.response.status_code": 503})  # fmt: skip


def test_classify_exports_the_first_error_of_the_current_run(tmp_path: Path) -> None:
    proc, tel = make_classify(tmp_path)
    run(proc, trace_batch([_fail("checkout", T0 + 10), _fail("checkout", T0 + 70)], complete_traces=True))
    run(proc, trace_batch([_fail("checkout", T0 + 200), _fail("payments", T0 + 220)], complete_traces=True))
    assert _gauge(tel) == {"checkout": T0 + 10, "payments": T0 + 220}
    # A late item of the same run moves its start back.
    run(proc, trace_batch([_fail("checkout", T0 + 5)], complete_traces=True))
    assert _gauge(tel)["checkout"] == T0 + 5
    # Over five quiet minutes later the errors are a new run: the gauge follows.
    run(proc, trace_batch([_fail("checkout", T0 + 900)], complete_traces=True))
    assert _gauge(tel)["checkout"] == T0 + 900


def test_service_alert_rules_carry_the_first_error_annotation() -> None:
    carrying, without = set(), set()
    for path in RULES.glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                target = carrying if rule["annotations"].get("first_error_at") == FIRST_ERROR_AT else without
                target.add(rule["alert"])
    assert {"ErrorgateErrorRateHigh", "ErrorgateErrorRateReview", "ErrorgateErrorBudgetBurn",
            "ErrorgateServiceInIncident"} <= carrying  # fmt: skip
    assert "ErrorgateDeadLetters" in without  # pipeline alerts have no service's errors to date


def test_engine_reads_the_annotation_and_falls_back_when_empty() -> None:
    # What Prometheus sends: the template's value, or "" when classify's gauge is absent.
    with_value = alert(fingerprint="a", starts="2025-06-15T14:00:00Z", first_error="1749995700")
    empty = alert(fingerprint="b", starts="2025-06-15T14:00:00Z")
    empty["annotations"]["first_error_at"] = ""
    parsed = parse_alerts(json.dumps(alertmanager_payload(with_value, empty)).encode(), "alertmanager")
    assert parsed[0].first_error_at == 1749995700.0
    assert parsed[1].first_error_at is None  # the engine then dates the first error at startsAt
