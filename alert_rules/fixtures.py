"""promtool unit-test fixtures (``alert_rules/tests/*.test.yml``) generated from catalog + policy.

Each threshold is exercised just below/at and just above its boundary, so a change to the
catalog or the policy moves the fixtures with it while ``promtool test rules`` checks that the
PromQL really fires there. Expectations are plain arithmetic on the thresholds, independent of
the PromQL text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from errorgate.alert_rules.policy import Policy
from errorgate.alert_rules.prometheus_rules import FAMILY_FILES
from errorgate.alert_rules.rules import DEFAULT_SERVICE, AlertSpec, fmt, service_scopes
from errorgate.governance.catalog import ServiceCatalog

UNKNOWN_SERVICE = "not-in-catalog"
REQUESTS_PER_MINUTE = 10000


def _render(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


# The first error two replicas saw (classify's gauge); the annotation holds the earlier one.
FIRST_ERROR_AT = 1765000000


def _first_error_series(service: str) -> list[dict[str, str]]:
    gauge = "errorgate_first_error_timestamp_seconds"
    return [
        {"series": f'{gauge}{{service="{service}",instance="a"}}', "values": f"{FIRST_ERROR_AT + 90}x30"},
        {"series": f'{gauge}{{service="{service}",instance="b"}}', "values": f"{FIRST_ERROR_AT}x30"},
    ]


def _expected(
    spec: AlertSpec, series_labels: dict[str, str], first_error: int | None = None
) -> dict[str, Any]:
    labels = series_labels | spec.labels
    annotations = {"summary": _render(spec.summary, labels)}
    if spec.first_error:
        # Without classify's gauge the annotation is empty (the engine then uses startsAt).
        annotations["first_error_at"] = "" if first_error is None else str(first_error)
    return {"exp_labels": labels, "exp_annotations": annotations}


def _find(specs: list[AlertSpec], alertname: str, service: str, **labels: str) -> AlertSpec:
    for spec in specs:
        if (
            spec.alertname == alertname
            and spec.key.endswith("/" + service)
            and all(spec.labels.get(k) == v for k, v in labels.items())
        ):
            return spec
    raise KeyError(f"{alertname} for {service}")


def _failed_series(service: str) -> str:
    """Burn rates count failed requests (the SLO's bad events), not every failing span."""
    return f'errorgate_failed_requests_total{{service="{service}"}}'


def _err_series(service: str, kind: str, category: str) -> str:
    return (
        f'errorgate_errors_total{{service="{service}",component="api",domain="network",'
        f'kind="{kind}",severity="P2",category="{category}"}}'
    )


def _merge(
    name: str, parts: list[tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]], at: str
) -> dict:
    """One promtool test from per-service (input series, alertname -> expected alerts) parts:
    all services run side by side, so each rule also proves it ignores the others' series."""
    series: list[dict[str, Any]] = []
    expected: dict[str, list[dict[str, Any]]] = {}
    for part_series, part_expected in parts:
        series.extend(part_series)
        for alertname, alerts in part_expected.items():
            expected.setdefault(alertname, []).extend(alerts)
    return {
        "name": name,
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": a, "exp_alerts": e} for a, e in expected.items()],
    }


def _service(scope_name: str) -> str:
    return UNKNOWN_SERVICE if scope_name == DEFAULT_SERVICE else scope_name


def error_rate_tests(catalog: ServiceCatalog, policy: Policy, specs: list[AlertSpec]) -> dict[str, Any]:
    scopes = service_scopes(catalog)
    # (name, threshold picker, factor, alert fires?, review fires?) -- within 1% of each boundary
    cases = [
        ("just below the alert threshold: review only", "alert", 0.99, False, True),
        ("just above the alert threshold: alert only", "alert", 1.01, True, False),
        ("just below the review threshold: nothing", "review", 0.99, False, False),
        ("just above the review threshold: review", "review", 1.01, False, True),
    ]
    tests = []
    for name, which, factor, alert_fires, review_fires in cases:
        parts = []
        for scope in scopes:
            service = _service(scope.name)
            th = scope.entry.error_rate
            per_minute = (th.alert_per_minute if which == "alert" else th.review_per_minute) * factor
            labels = {"service": service, "kind": "persistent", "category": "timeout"}
            alert = _find(specs, "ErrorgateErrorRateHigh", scope.name)
            review = _find(specs, "ErrorgateErrorRateReview", scope.name)
            series = [
                {"series": _err_series(service, "persistent", "timeout"), "values": f"0+{fmt(per_minute)}x30"}
            ]
            fires_review = review_fires and th.review_per_minute < per_minute <= th.alert_per_minute
            parts.append(
                (
                    series,
                    {
                        "ErrorgateErrorRateHigh": [_expected(alert, labels)] if alert_fires else [],
                        "ErrorgateErrorRateReview": [_expected(review, labels)] if fires_review else [],
                    },
                )
            )
        tests.append(_merge(f"error rate {name}", parts, "20m"))
    # The service total decides, each failing (kind, category) becomes its own alert.
    parts = []
    for scope in scopes:
        service = _service(scope.name)
        alert = _find(specs, "ErrorgateErrorRateHigh", scope.name)
        half = fmt(scope.entry.error_rate.alert_per_minute * 1.02 / 2)
        parts.append(
            (
                [
                    {"series": _err_series(service, "transient", "timeout"), "values": f"0+{half}x30"},
                    {"series": _err_series(service, "persistent", "validation"), "values": f"0+{half}x30"},
                    {"series": _err_series(service, "persistent", "not_failing"), "values": "0x30"},
                    *_first_error_series(service),
                ],
                {
                    "ErrorgateErrorRateHigh": [
                        _expected(
                            alert,
                            {"service": service, "kind": "persistent", "category": "validation"},
                            FIRST_ERROR_AT,
                        ),
                        _expected(
                            alert,
                            {"service": service, "kind": "transient", "category": "timeout"},
                            FIRST_ERROR_AT,
                        ),
                    ]
                },
            )
        )
    tests.append(_merge("two kinds that only together exceed the alert threshold both alert", parts, "20m"))
    for at, active in (("3m", False), ("8m", True), ("25m", False)):
        parts = []
        for scope in scopes:
            service = _service(scope.name)
            marker = _find(specs, "ErrorgateServiceInIncident", scope.name)
            series = [
                {
                    "series": f'errorgate_active_incident_services{{service="{service}"}}',
                    "values": "0x5 1x5 0x20",
                }
            ]
            parts.append(
                (
                    series,
                    {
                        "ErrorgateServiceInIncident": [_expected(marker, {"service": service})]
                        if active
                        else []
                    },
                )
            )
        tests.append(
            _merge(f"incident marker at {at} (gauge is 1 from 6m to 10m, keep_firing_for applies)", parts, at)
        )
    return {
        "rule_files": [f"../prometheus/{FAMILY_FILES['errors']}"],
        "evaluation_interval": policy.evaluation_interval,
        "tests": tests,
    }


def burn_rate_tests(catalog: ServiceCatalog, policy: Policy, specs: list[AlertSpec]) -> dict[str, Any]:
    tests = []
    windows = policy.burn_rate.windows
    scopes = service_scopes(catalog)

    def burn_alerts(scope_name: str, fired: Sequence[str]) -> list[dict[str, Any]]:
        service = _service(scope_name)
        return [
            _expected(
                _find(specs, "ErrorgateErrorBudgetBurn", scope_name, slo_window=w), {"service": service}
            )
            for w in fired
        ]

    def requests(service: str, samples: int) -> dict[str, str]:
        return {
            "series": f'errorgate_requests_total{{service="{service}"}}',
            "values": f"0+{REQUESTS_PER_MINUTE}x{samples}",
        }

    for name, window in windows.items():
        for factor in (0.99, 1.01):
            burn = window.factor * factor
            parts = []
            for scope in scopes:
                service = _service(scope.name)
                per_minute = fmt(burn * scope.entry.error_budget * REQUESTS_PER_MINUTE)
                series = [
                    requests(service, 70),
                    {"series": _failed_series(service), "values": f"0+{per_minute}x70"},
                ]
                fired = [w for w, win in windows.items() if burn > win.factor]
                parts.append((series, {"ErrorgateErrorBudgetBurn": burn_alerts(scope.name, fired)}))
            tests.append(
                _merge(f"burning {fmt(factor)} x the {name} factor ({fmt(burn)}x the budget)", parts, "65m")
            )
    # Multiwindow: once errors stop, the short window clears the fast page even though the
    # long (1h) window still burns above its factor; the slower windows keep firing.
    burn = 3 * windows["fast"].factor
    parts = []
    for scope in scopes:
        service = _service(scope.name)
        rate = burn * scope.entry.error_budget * REQUESTS_PER_MINUTE
        series = [
            requests(service, 90),
            {
                "series": _failed_series(service),
                "values": f"0+{fmt(rate)}x60 {fmt(60 * rate)}x30",
            },
        ]
        parts.append(
            (
                series,
                {"ErrorgateErrorBudgetBurn": burn_alerts(scope.name, [w for w in windows if w != "fast"])},
            )
        )
    tests.append(_merge("errors stopped 20m ago: fast burn cleared by its short window", parts, "80m"))
    return {
        "rule_files": [f"../prometheus/{FAMILY_FILES['slo']}"],
        "evaluation_interval": policy.evaluation_interval,
        "tests": tests,
    }


def pipeline_tests(policy: Policy, specs: list[AlertSpec]) -> dict[str, Any]:
    by_name = {s.alertname: s for s in specs if s.family == "pipeline"}
    min_items = policy.pipeline.queue_filling.min_items

    def case(
        name: str, series: list[tuple[str, str]], alertname: str, at: str, labels: dict[str, str] | None
    ) -> dict:
        return {
            "name": name,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alertname,
                    "exp_alerts": [] if labels is None else [_expected(by_name[alertname], labels)],
                }
            ],
        }

    dl = 'errorgate_dead_lettered_items_total{signal="traces",reason="max_elapsed_time"}'
    cs = 'errorgate_exporter_circuit_state{exporter="otlp"}'
    q = 'errorgate_queue_items{exporter="otlp"}'
    rf = 'errorgate_redaction_failures_total{signal="logs"}'
    dp = 'errorgate_disk_pressure{instance="eg-1"}'
    mr = 'errorgate_memory_limiter_refusing{instance="eg-1"}'
    grow = f"{min_items + 100}+100x40"
    tests = [
        case(
            "dead letters: new items alert",
            [(dl, "0x10 5x30")],
            "ErrorgateDeadLetters",
            "15m",
            {"signal": "traces", "reason": "max_elapsed_time"},
        ),
        case(
            "dead letters: an old, unchanged count does not",
            [(dl, "5x40")],
            "ErrorgateDeadLetters",
            "30m",
            None,
        ),
        case(
            "circuit open for long enough",
            [(cs, "2x40")],
            "ErrorgateExporterCircuitOpen",
            "30m",
            {"exporter": "otlp"},
        ),
        case("circuit half-open does not alert", [(cs, "1x40")], "ErrorgateExporterCircuitOpen", "30m", None),
        case(
            "queue above the limit and growing",
            [(q, grow)],
            "ErrorgateQueueFilling",
            "30m",
            {"exporter": "otlp"},
        ),
        case(
            "queue above the limit but draining",
            [(q, f"{min_items * 3}-10x40")],
            "ErrorgateQueueFilling",
            "30m",
            None,
        ),
        case("queue growing below the limit", [(q, "0+10x40")], "ErrorgateQueueFilling", "30m", None),
        case(
            "redaction failed closed",
            [(rf, "0x10 1x30")],
            "ErrorgateRedactionFailClosed",
            "12m",
            {"signal": "logs"},
        ),
        case("redaction healthy", [(rf, "0x40")], "ErrorgateRedactionFailClosed", "30m", None),
        case(
            "disk full for minutes",
            [(dp, "0x10 1x30"), (mr, "0x40")],
            "ErrorgateRefusingData",
            "20m",
            {"instance": "eg-1"},
        ),
        case(
            "memory limit for minutes",
            [(dp, "0x40"), (mr, "0x10 1x30")],
            "ErrorgateRefusingData",
            "20m",
            {"instance": "eg-1"},
        ),
        case(
            "a one-minute blip does not page",
            [(dp, "0x10 1x1 0x30"), (mr, "0x40")],
            "ErrorgateRefusingData",
            "12m",
            None,
        ),
    ]
    return {
        "rule_files": [f"../prometheus/{FAMILY_FILES['pipeline']}"],
        "evaluation_interval": policy.evaluation_interval,
        "tests": tests,
    }


def build_fixtures(
    catalog: ServiceCatalog, policy: Policy, specs: list[AlertSpec]
) -> dict[str, dict[str, Any]]:
    return {
        "errors.test.yml": error_rate_tests(catalog, policy, specs),
        "slo.test.yml": burn_rate_tests(catalog, policy, specs),
        "pipeline.test.yml": pipeline_tests(policy, specs),
    }
