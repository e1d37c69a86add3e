"""Alert rules as engine-neutral specs, built from the service catalog and the policy.

Prometheus rule files and Grafana rule groups are both rendered from these specs, so the two
evaluate the same PromQL with the same labels. Thresholds are literals taken from the catalog
(the same numbers classify exports as ``errorgate_error_rate_threshold`` / ``errorgate_slo_objective``),
so rules keep working when those gauges are absent and promtool can test their boundaries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from errorgate.alert_rules.policy import Policy, Severity
from errorgate.governance.catalog import ServiceCatalog, ServiceEntry

DEFAULT_SERVICE = "_default"
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


@dataclass(frozen=True)
class AlertSpec:
    alertname: str
    group: str  # rule group name (one file per group family)
    family: str  # "errors", "slo", "pipeline": which rules file
    expr: str  # PromQL; a series in the result is a firing alert
    threshold: float  # the value the result is compared with (Grafana's threshold expression)
    for_: str
    keep_firing_for: str
    labels: dict[str, str]
    summary: str  # template over $labels only: payload values never reach a notification
    no_data: str = "ok"
    key: str = ""  # stable identity -> Grafana uid
    # The alert's series carry ``service``: Prometheus adds a ``first_error_at`` annotation
    # (see prometheus_rules.FIRST_ERROR_AT) that the incident engine reads for MTTD.
    first_error: bool = False

    @property
    def uid(self) -> str:
        return "eg-" + hashlib.sha1(self.key.encode()).hexdigest()[:16]


@dataclass
class ServiceScope:
    """Which series a rule covers: one catalog service, or every service not in the catalog."""

    name: str
    entry: ServiceEntry
    selector: str  # PromQL label matcher for the service
    others: list[str] = field(default_factory=list)


def fmt(value: float) -> str:
    text = repr(round(value, 12))
    return text[:-2] if text.endswith(".0") else text


def service_scopes(catalog: ServiceCatalog) -> list[ServiceScope]:
    scopes = []
    for name, entry in sorted(catalog.services.items()):
        if not _SERVICE_NAME.match(name):
            raise ValueError(f"services.{name}: name has characters that cannot appear in a PromQL matcher")
        scopes.append(ServiceScope(name, entry, f'service="{name}"'))
    known = "|".join(re.escape(n).replace("\\", "\\\\") for n in sorted(catalog.services))
    selector = f'service!~"{known}"' if known else 'service!=""'
    scopes.append(ServiceScope(DEFAULT_SERVICE, catalog.default, selector))
    return scopes


def _labels(
    scope: ServiceScope, severity: Severity, kind: str | None, category: str | None
) -> dict[str, str]:
    labels: dict[str, str] = {"severity": severity, "team": scope.entry.owner}
    if scope.name != DEFAULT_SERVICE:
        labels["service"] = scope.name
    if kind is not None:
        labels["kind"] = kind
    if category is not None:
        labels["category"] = category
    return labels


def error_rate_value(scope: ServiceScope, window: str) -> str:
    """Errors per minute of the whole service, on one series per (kind, category) seen failing.

    The service total decides whether to fire; the kind/category split lets routing treat a
    transient flood differently from a persistent failure.
    """
    total = f"sum by (service) (rate(errorgate_errors_total{{{scope.selector}}}[{window}])) * 60"
    parts = (
        f"sum by (service, kind, category) (rate(errorgate_errors_total{{{scope.selector}}}[{window}])) > 0"
    )
    return f"(({parts}) * 0 + on (service) group_left () ({total}))"


def error_ratio(scope: ServiceScope, window: str) -> str:
    return (
        f"(sum by (service) (rate(errorgate_failed_requests_total{{{scope.selector}}}[{window}]))"
        f" / sum by (service) (rate(errorgate_requests_total{{{scope.selector}}}[{window}])))"
    )


def build_specs(catalog: ServiceCatalog, policy: Policy) -> list[AlertSpec]:
    specs: list[AlertSpec] = []
    er = policy.error_rate
    for scope in service_scopes(catalog):
        tier = policy.tiers[scope.entry.tier]
        value = error_rate_value(scope, er.window)
        alert_t = scope.entry.error_rate.alert_per_minute
        review_t = scope.entry.error_rate.review_per_minute
        specs.append(
            AlertSpec(
                alertname="ErrorgateErrorRateHigh",
                group="errorgate-error-rate",
                family="errors",
                expr=f"{value} > {fmt(alert_t)}",
                threshold=alert_t,
                for_=er.alert.for_,
                keep_firing_for=er.alert.keep_firing_for,
                labels=_labels(scope, tier.error_rate_alert, None, None),
                summary="{{ $labels.service }}: error rate above the alert threshold"
                " ({{ $labels.kind }}/{{ $labels.category }})",
                no_data=er.no_data,
                key=f"error-rate-alert/{scope.name}",
                first_error=True,
            )
        )
        specs.append(
            AlertSpec(
                alertname="ErrorgateErrorRateReview",
                group="errorgate-error-rate",
                family="errors",
                # Above the alert threshold the alert covers it; a review would only duplicate.
                expr=f"{value} > {fmt(review_t)} <= {fmt(alert_t)}",
                threshold=review_t,
                for_=er.review.for_,
                keep_firing_for=er.review.keep_firing_for,
                labels=_labels(scope, tier.error_rate_review, None, None),
                summary="{{ $labels.service }}: error rate above the review threshold"
                " ({{ $labels.kind }}/{{ $labels.category }})",
                no_data=er.no_data,
                key=f"error-rate-review/{scope.name}",
                first_error=True,
            )
        )
    br = policy.burn_rate
    for window_name, window in br.windows.items():
        for scope in service_scopes(catalog):
            severity = policy.tiers[scope.entry.tier].burn_rate[window_name]
            limit = window.factor * scope.entry.error_budget
            long_r, short_r = error_ratio(scope, window.long), error_ratio(scope, window.short)
            labels = _labels(scope, severity, "slo", "error_budget") | {"slo_window": window_name}
            specs.append(
                AlertSpec(
                    alertname="ErrorgateErrorBudgetBurn",
                    group=f"errorgate-slo-{window_name}",
                    family="slo",
                    expr=f"{long_r} > {fmt(limit)} and {short_r} > {fmt(limit)}",
                    threshold=limit,
                    for_=window.for_,
                    keep_firing_for=br.keep_firing_for,
                    labels=labels,
                    summary=f"{{{{ $labels.service }}}}: error budget burning at over {fmt(window.factor)}x"
                    f" ({window.long} and {window.short} windows)",
                    no_data=br.no_data,
                    key=f"burn/{window_name}/{scope.name}",
                    first_error=True,
                )
            )
    inc = policy.incident
    for scope in service_scopes(catalog):
        specs.append(
            AlertSpec(
                alertname="ErrorgateServiceInIncident",
                group="errorgate-incidents",
                family="errors",
                expr=f"max by (service) (errorgate_active_incident_services{{{scope.selector}}}) > 0",
                threshold=0,
                for_=inc.for_,
                keep_firing_for=inc.keep_firing_for,
                labels=_labels(scope, inc.severity, "cascading", "incident"),
                summary="{{ $labels.service }} is part of an active multi-service incident",
                key=f"incident/{scope.name}",
                first_error=True,
            )
        )
    specs.extend(_pipeline_specs(policy))
    return specs


def _pipeline_specs(policy: Policy) -> list[AlertSpec]:
    p = policy.pipeline

    def labels(severity: Severity, category: str) -> dict[str, str]:
        return {
            "severity": severity,
            "team": p.team,
            "service": p.service,
            "kind": "pipeline",
            "category": category,
        }

    dl, co, qf, rf, rd = (
        p.dead_letters,
        p.circuit_open,
        p.queue_filling,
        p.redaction_fail_closed,
        p.refusing_data,
    )
    return [
        AlertSpec(
            alertname="ErrorgateDeadLetters",
            group="errorgate-pipeline",
            family="pipeline",
            expr=f"sum by (signal, reason) (increase(errorgate_dead_lettered_items_total[{dl.window}])) > 0",
            threshold=0,
            for_=dl.for_,
            keep_firing_for="0s",
            labels=labels(dl.severity, "dead_letter"),
            summary="errorgate dead-lettered {{ $labels.signal }} items ({{ $labels.reason }})",
            key="pipeline/dead-letters",
        ),
        AlertSpec(
            alertname="ErrorgateExporterCircuitOpen",
            group="errorgate-pipeline",
            family="pipeline",
            expr="max by (exporter) (errorgate_exporter_circuit_state) > 1",
            threshold=1,
            for_=co.for_,
            keep_firing_for="0s",
            labels=labels(co.severity, "circuit_open"),
            summary="errorgate exporter {{ $labels.exporter }}: circuit open",
            key="pipeline/circuit-open",
        ),
        AlertSpec(
            alertname="ErrorgateQueueFilling",
            group="errorgate-pipeline",
            family="pipeline",
            expr=f"max by (exporter) (errorgate_queue_items) > {qf.min_items}"
            f" and max by (exporter) (deriv(errorgate_queue_items[{qf.window}])) > 0",
            threshold=qf.min_items,
            for_=qf.for_,
            keep_firing_for="0s",
            labels=labels(qf.severity, "queue_filling"),
            summary="errorgate exporter {{ $labels.exporter }}: queue keeps growing",
            key="pipeline/queue-filling",
        ),
        AlertSpec(
            alertname="ErrorgateRedactionFailClosed",
            group="errorgate-pipeline",
            family="pipeline",
            expr=f"sum by (signal) (increase(errorgate_redaction_failures_total[{rf.window}])) > 0",
            threshold=0,
            for_=rf.for_,
            keep_firing_for="0s",
            labels=labels(rf.severity, "redaction_fail_closed"),
            summary="errorgate redaction failed closed on {{ $labels.signal }}: data withheld",
            key="pipeline/redaction-fail-closed",
        ),
        AlertSpec(
            alertname="ErrorgateRefusingData",
            group="errorgate-pipeline",
            family="pipeline",
            expr="max by (instance) (errorgate_disk_pressure) > 0"
            " or max by (instance) (errorgate_memory_limiter_refusing) > 0",
            threshold=0,
            for_=rd.for_,
            keep_firing_for="0s",
            labels=labels(rd.severity, "refusing_data"),
            summary="errorgate {{ $labels.instance }} refuses new data (disk or memory limit)",
            key="pipeline/refusing-data",
        ),
    ]
