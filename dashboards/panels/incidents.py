"""Incidents and self-healing: how fast errors become incidents and incidents end (the incident
engine's KPI histograms), whether pages and silences reach their targets, which engine leads,
and the notifications of rollbacks.

The incident metrics are served by the incident engine's own ``/metrics`` (``errorgate
incidents serve``), not the gateway's: scrape both into the same Prometheus."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from errorgate.dashboards.panels import ENV, agg, dashboard, sel, single_stat, ts

LEADER = {"0": ("follower", "blue"), "1": ("leader", "green")}

# (panel title, histogram, what it measures) for the incident engine's response times.
RESPONSE_TIMES = (
    ("Time to detect", "errorgate_incident_time_to_detect_seconds", "First error to incident opened."),
    (
        "Time to acknowledge",
        "errorgate_incident_time_to_acknowledge_seconds",
        "Incident opened to acknowledged.",
    ),
    ("Time to resolve", "errorgate_incident_time_to_resolve_seconds", "Incident opened to resolved."),
)

# (panel title, counter, by, legend, description) for pages and silences.
PAGING = (
    (
        "Page retries by outcome",
        "errorgate_incident_page_retries_total",
        "channel, outcome",
        "{{channel}} {{outcome}}",
        "Re-sends after a channel refused a page (same dedup key).",
    ),
    (
        "Pages given up",
        "errorgate_incident_pages_given_up_total",
        "channel",
        "{{channel}}",
        "Pages abandoned after every attempt failed: someone was not told.",
    ),
    (
        "Silence failures",
        "errorgate_incident_silence_failures_total",
        "target",
        "{{target}}",
        "By silence target.",
    ),
)


def incidents() -> db.Dashboard:
    d = dashboard(
        "errorgate-incidents",
        "errorgate / Incidents and self-healing",
        "Time to detect, acknowledge and resolve; pages and silences that failed; the engine's "
        "leader; rollback notifications.",
        ["incidents"],
    )
    d = d.with_row(db.Row("Response times (median and p90 by severity)"))
    for title, metric, description in RESPONSE_TIMES:
        buckets = agg(f"{metric}_bucket", "le, severity", ENV)
        quantiles = [
            (f"histogram_quantile({q}, {buckets})", f"{{{{severity}}}} p{round(q * 100)}") for q in (0.5, 0.9)
        ]
        d = d.with_panel(ts(title, "s", quantiles, description=description, width=8))
    d = d.with_row(db.Row("Paging and silences"))
    for title, metric, by, legend, description in PAGING:
        d = d.with_panel(ts(title, "cps", [(agg(metric, by, ENV), legend)], description=description, width=8))
    d = d.with_row(db.Row("High availability and rollbacks"))
    leader = f"max by (instance, role) ({sel('errorgate_ha_leader', ENV)})"
    d = d.with_panel(
        single_stat(
            "Incident engine leader",
            "none",
            leader,
            "{{instance}} {{role}}",
            description="Under ha: exactly one engine should be the leader.",
            mappings=LEADER,
            width=8,
            height=8,
        )
    )
    notifications = agg("errorgate_rollback_notifications_total", "target, outcome", ENV)
    return d.with_panel(
        ts(
            "Rollback notifications",
            "cps",
            [(notifications, "{{target}} {{outcome}}")],
            description="Grafana annotations and incident-timeline notes of each rollback.",
            width=16,
        )
    )
