"""Error overview and service drill-down dashboards (metrics of processors/classify.py)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from errorgate.dashboards.panels import ENV, RANGE, agg, dashboard, sel, single_stat, top_table, ts

ERRORS = agg("errorgate_errors_total", "service")
REQUESTS = agg("errorgate_requests_total", "service")
# Healthy services have requests but no error series; "or 0 * requests" charts them as 0, not as a gap.
ERROR_RATE = f"{ERRORS} or 0 * {REQUESTS}"
# The ratio is failed requests over requests (the SLO's bad/total events), never errors over
# requests: a cascade fails several spans per request.
FAILED = agg("errorgate_failed_requests_total", "service")
ERROR_RATIO = f"({FAILED} or 0 * {REQUESTS}) / {REQUESTS}"


def burn_rate(window: str) -> str:
    errors = agg("errorgate_failed_requests_total", "service", window=window)
    requests = agg("errorgate_requests_total", "service", window=window)
    # max by (service): replicas export the same objective, and a bare on(service) join would be many-to-many.
    objective = f"max by (service) ({sel('errorgate_slo_objective')})"
    return f"({errors} or 0 * {requests}) / {requests} / on (service) (1 - {objective})"


def error_overview() -> db.Dashboard:
    d = dashboard(
        "errorgate-errors",
        "errorgate / Error overview",
        "Error rate and ratio by service, severity, kind and category; error groups; deploys; SLO burn.",
        ["errors"],
    )
    d = d.with_row(db.Row("Error rate"))
    d = d.with_panel(
        ts("Error rate by service", "cps", [(ERROR_RATE, "{{service}}")], description="Errors/s.")
    )
    d = d.with_panel(
        ts(
            "Error ratio by service",
            "percentunit",
            [(ERROR_RATIO, "{{service}}")],
            description="Errors per request. Every failing span and error log counts, so a failed "
            "request whose database call failed too counts twice: above 100 % is possible.",
        )
    )
    for label in ("severity", "kind", "category"):
        d = d.with_panel(
            ts(
                f"Errors by {label}",
                "cps",
                [(agg("errorgate_errors_total", label), f"{{{{{label}}}}}")],
                width=8,
            )
        )
    d = d.with_row(db.Row("Error groups and deploys"))
    top = agg("errorgate_errors_total", "service, component, category", fn="increase", window=RANGE)
    d = d.with_panel(
        top_table(
            "Top error groups",
            "short",
            f"topk(10, {top})",
            description="Errors in the time range by service, component and category. The fingerprints "
            "(errorgate.error.fingerprint) of a group are on its spans and log records.",
        )
    )
    new = agg("errorgate_new_fingerprints_total", "service", fn="increase")
    d = d.with_panel(
        ts(
            "New fingerprints",
            "short",
            [(new, "{{service}}")],
            description="First sightings of an error group. A burst right after a new service.version "
            "appears in the panel below is a regression of that deploy.",
            bars=True,
        )
    )
    since = f"time() - min by (service) ({sel('errorgate_first_error_timestamp_seconds')})"
    d = d.with_panel(
        top_table(
            "Failing for",
            "s",
            since,
            description="Time since the first error of each service's current run of errors (a run "
            "ends after 5 minutes without one): the start the incident engine measures MTTD from.",
        )
    )
    by_version = agg("errorgate_errors_by_version_total", "service, version")
    d = d.with_panel(
        ts(
            "Errors by service.version",
            "cps",
            [(by_version, "{{service}} {{version}}")],
            description="Deploy comparison: the error rate of each version side by side.",
        )
    )
    failed_v = agg("errorgate_failed_requests_by_version_total", "service, version")
    requests_v = agg("errorgate_requests_by_version_total", "service, version")
    d = d.with_panel(
        ts(
            "Failure ratio by service.version",
            "percentunit",
            [(f"({failed_v} or 0 * {requests_v}) / {requests_v}", "{{service}} {{version}}")],
            description="Deploy comparison normalised by traffic: failed requests over requests of "
            "each version, so a canary with 5 % of the traffic compares fairly with the rest.",
        )
    )
    d = d.with_row(db.Row("SLO burn rate"))
    for name, (long, short), factor in (("fast", ("1h", "5m"), 14.4), ("slow", ("6h", "30m"), 6)):
        d = d.with_panel(
            ts(
                f"Burn rate, {name} windows ({long} / {short})",
                "short",
                [
                    (burn_rate(long), f"{{{{service}}}} {long}"),
                    (burn_rate(short), f"{{{{service}}}} {short}"),
                ],
                description=f"Error-budget burn (1 = the budget lasts exactly the SLO period). "
                f"Multiwindow: act when both windows exceed {factor}.",
            )
        )
    return d


def service_drilldown() -> db.Dashboard:
    d = dashboard(
        "errorgate-service",
        "errorgate / Service drill-down",
        "For the selected service(s): failing domains and components, cascades, retries and transient share.",
        ["errors", "service"],
    )
    d = d.with_row(db.Row("What is failing"))
    threshold = f"max by (service, level) ({sel('errorgate_error_rate_threshold')})"
    d = d.with_panel(
        ts(
            "Error rate vs thresholds",
            "short",
            [
                (f"60 * ({ERROR_RATE})", "{{service}} errors/min"),
                (threshold, "{{service}} {{level}} threshold"),
            ],
            description="Errors per minute against the catalog's alert and review thresholds.",
        )
    )
    d = d.with_panel(
        single_stat(
            "In an active incident",
            "none",
            f"max by (service) ({sel('errorgate_active_incident_services')})",
            "{{service}}",
            description="1 while the service is part of an active multi-service incident.",
            mappings={"0": ("no", "green"), "1": ("in incident", "red")},
        )
    )
    incidents = (
        f'sum by (origin_service) (increase(errorgate_incidents_total{{{ENV}, origin_service=~"$service"}}'
    )
    d = d.with_panel(
        single_stat(
            "Incidents opened",
            "short",
            f"{incidents}[{RANGE}]))",
            "{{origin_service}}",
            description="Multi-service incidents that started in the selected services (time range).",
        )
    )
    d = d.with_panel(ts("Failing domains", "cps", [(agg("errorgate_errors_total", "domain"), "{{domain}}")]))
    d = d.with_panel(
        ts(
            "Failing components",
            "cps",
            [(agg("errorgate_errors_total", "service, component"), "{{service}} {{component}}")],
        )
    )
    d = d.with_row(db.Row("Cascades"))
    d = d.with_panel(
        ts(
            "Cascade errors originated vs received",
            "cps",
            [(agg("errorgate_cascade_errors_total", "service, role"), "{{service}} {{role}}")],
            description="origin: failures that started here; propagated: received from a dependency.",
        )
    )
    received = agg("errorgate_cascade_errors_total", "service, origin_service", role="propagated")
    d = d.with_panel(
        ts("Received cascades by origin service", "cps", [(received, "{{service}} ← {{origin_service}}")])
    )
    d = d.with_row(db.Row("Retries and transient failures"))
    transient = agg("errorgate_errors_total", "service", kind="transient")
    d = d.with_panel(
        ts(
            "Transient share of errors",
            "percentunit",
            [(f"{transient} / {ERRORS}", "{{service}}")],
            description="Share of errors classified transient (they go away on retry).",
        )
    )
    retried = agg("errorgate_retried_operations_total", "service, outcome")
    d = d.with_panel(ts("Retried operations by outcome", "cps", [(retried, "{{service}} {{outcome}}")]))
    episodes = agg("errorgate_error_episodes_total", "kind", fn="increase")
    d = d.with_panel(
        ts("Error episodes started, by kind", "short", [(episodes, "{{kind}}")], bars=True, width=24)
    )
    return d
