"""Pipeline health, privacy and governance, and retention dashboards."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db

from errorgate.dashboards.panels import ENV, RANGE, agg, bars, dashboard, sel, single_stat, ts

CIRCUIT = {"0": ("closed", "green"), "1": ("half-open", "orange"), "2": ("open", "red")}


def pipeline_health() -> db.Dashboard:
    d = dashboard(
        "errorgate-pipeline",
        "errorgate / Pipeline health",
        "Items in, out, dropped and dead-lettered; queues, circuit breakers, processor latency, sampling.",
        ["pipeline"],
    )
    d = d.with_row(db.Row("Throughput"))
    for title, unit, metric, by, legend in (
        ("Received items by signal", "cps", "errorgate_received_items_total", "signal", "{{signal}}"),
        (
            "Exported items",
            "cps",
            "errorgate_exported_items_total",
            "signal, exporter",
            "{{signal}} → {{exporter}}",
        ),
        (
            "Dropped items by reason",
            "cps",
            "errorgate_dropped_items_total",
            "signal, reason",
            "{{signal}} {{reason}}",
        ),
        (
            "Dead-lettered items",
            "cps",
            "errorgate_dead_lettered_items_total",
            "signal, reason",
            "{{signal}} {{reason}}",
        ),
        (
            "Rejected requests",
            "reqps",
            "errorgate_rejected_requests_total",
            "receiver, reason",
            "{{receiver}} {{reason}}",
        ),
        ("Duplicate batches", "cps", "errorgate_duplicate_batches_total", "signal", "{{signal}}"),
    ):
        d = d.with_panel(ts(title, unit, [(agg(metric, by, ENV), legend)], width=8))
    d = d.with_row(db.Row("Delivery"))
    d = d.with_panel(
        ts(
            "Queue depth",
            "short",
            [(f"sum by (exporter) ({sel('errorgate_queue_items', ENV)})", "{{exporter}}")],
            width=8,
        )
    )
    d = d.with_panel(
        ts(
            "Queue size",
            "bytes",
            [(f"sum by (exporter) ({sel('errorgate_queue_bytes', ENV)})", "{{exporter}}")],
            width=8,
        )
    )
    circuit = f"max by (exporter) ({sel('errorgate_exporter_circuit_state', ENV)})"
    d = d.with_panel(
        single_stat(
            "Exporter circuit state", "none", circuit, "{{exporter}}", mappings=CIRCUIT, width=8, height=8
        )
    )
    attempts = agg("errorgate_export_attempts_total", "exporter, outcome", ENV)
    d = d.with_panel(
        ts("Export attempts by outcome", "cps", [(attempts, "{{exporter}} {{outcome}}")], width=24)
    )
    d = d.with_row(db.Row("Processors"))
    buckets = agg("errorgate_processor_duration_seconds_bucket", "le, processor", ENV)
    latency = [
        (f"histogram_quantile({q}, {buckets})", f"{{{{processor}}}} p{round(q * 100)}")
        for q in (0.5, 0.95, 0.99)
    ]
    d = d.with_panel(
        ts("Processor latency", "s", latency, description="Per-batch processing time percentiles.")
    )
    failures = agg("errorgate_processor_failures_total", "processor, signal", ENV)
    d = d.with_panel(ts("Processor failures", "cps", [(failures, "{{processor}} {{signal}}")]))
    restarts = agg("errorgate_processor_worker_restarts_total", "instance", ENV, fn="increase", window=RANGE)
    d = d.with_panel(
        ts(
            "Processor worker restarts (time range)",
            "short",
            [(restarts, "{{instance}}")],
            description="The processor worker died or stopped answering; its batches were dead-lettered.",
        )
    )
    d = d.with_row(db.Row("Sampling"))
    decisions = agg("errorgate_sampled_items_total", "signal, decision, reason", ENV)
    d = d.with_panel(
        ts("Sampling decisions", "cps", [(decisions, "{{signal}} {{decision}} {{reason}}")], stacked=True)
    )
    kept = agg("errorgate_sampled_items_total", "signal", ENV, decision="kept")
    represented = agg("errorgate_sampling_adjusted_items_total", "signal", ENV)
    d = d.with_panel(
        ts(
            "Kept vs represented volume",
            "cps",
            [(kept, "{{signal}} kept"), (represented, "{{signal}} represented")],
            description="Represented = the sum of the adjusted counts of kept items: the true volume.",
        )
    )
    held = f"sum({sel('errorgate_assembly_traces', ENV)})"
    d = d.with_panel(ts("Traces held by the assembler", "short", [(held, "traces")], width=12))
    waiting = f"sum({sel('errorgate_log_hold_requests', ENV)})"
    d = d.with_panel(ts("Log requests waiting for their traces", "short", [(waiting, "requests")], width=12))
    return _storage_and_memory(d)


def _storage_and_memory(d: db.Dashboard) -> db.Dashboard:
    """Disk pressure, storage write errors, dead-letter bounds, memory limiter."""
    d = d.with_row(db.Row("Storage and memory"))
    free = f"min by (directory) ({sel('errorgate_disk_free_bytes', ENV)})"
    d = d.with_panel(ts("Free disk space", "bytes", [(free, "{{directory}}")], width=8))
    pressure = f"max({sel('errorgate_disk_pressure', ENV)})"
    memory = f"max({sel('errorgate_memory_limiter_refusing', ENV)})"
    d = d.with_panel(
        ts(
            "Refusing data (disk, memory)",
            "short",
            [(pressure, "disk below service.disk.min_free_mib"), (memory, "memory above the soft limit")],
            description="1 while new data is refused (retryable) and /readyz fails.",
            width=8,
        )
    )
    errors = agg("errorgate_storage_write_errors_total", "store, error", ENV)
    d = d.with_panel(ts("Storage write errors", "cps", [(errors, "{{store}} {{error}}")], width=8))
    dlq_bytes = f"sum({sel('errorgate_dead_letter_bytes', ENV)})"
    d = d.with_panel(ts("Dead-letter store size", "bytes", [(dlq_bytes, "bytes")], width=8))
    expired = agg("errorgate_dead_letter_expired_items_total", "signal, limit", ENV)
    d = d.with_panel(ts("Dead letters expired", "cps", [(expired, "{{signal}} {{limit}}")], width=8))
    skipped = agg(
        "errorgate_queue_recovery_skipped_bytes_total", "exporter", ENV, fn="increase", window=RANGE
    )
    d = d.with_panel(
        ts(
            "Queue bytes skipped at recovery (time range)",
            "bytes",
            [(skipped, "{{exporter}}")],
            description="Unreadable bytes found in a persistent queue at start-up; the records after them were kept.",
            width=8,
        )
    )
    rss = f"sum by (instance) ({sel('errorgate_memory_rss_bytes', ENV)})"
    d = d.with_panel(ts("Memory of the process tree", "bytes", [(rss, "{{instance}}")], width=24))
    return _shared_state(d)


def _shared_state(d: db.Dashboard) -> db.Dashboard:
    """The redis extension: whether replicas share their error state, and its cost."""
    d = d.with_row(db.Row("Shared state"))
    up = f"min by (instance) ({sel('errorgate_shared_state_up', ENV)})"
    d = d.with_panel(ts("Shared state reachable", "short", [(up, "{{instance}}")], width=8))
    fallbacks = agg("errorgate_shared_state_fallbacks_total", "component", ENV)
    d = d.with_panel(
        ts(
            "Batches on local state",
            "cps",
            [(fallbacks, "{{component}}")],
            description="Redis did not answer in time: these batches used the replica's own state.",
            width=8,
        )
    )
    trips = agg("errorgate_shared_state_round_trips_total", "component", ENV)
    return d.with_panel(ts("Redis round trips", "cps", [(trips, "{{component}}")], width=8))


def privacy_governance() -> db.Dashboard:
    d = dashboard(
        "errorgate-privacy",
        "errorgate / Privacy and governance",
        "Redactions by entity type, rule and service, encryption, and fail-closed events. Decrypt attempts are "
        "recorded in the audit log only, not as metrics, so they have no panel here.",
        ["privacy"],
    )
    total = f"sum(increase({sel('errorgate_redactions_total')}[{RANGE}]))"
    d = d.with_panel(
        single_stat("Values redacted", "short", total, description="In the time range.", width=12)
    )
    fail_closed = f"sum(increase({sel('errorgate_redaction_failures_total', ENV)}[{RANGE}])) or vector(0)"
    d = d.with_panel(
        single_stat(
            "Fail-closed events",
            "short",
            fail_closed,
            description="Items withheld because redaction failed, in the time range. Should be 0.",
            thresholds=[(None, "green"), (1, "red")],
            width=12,
        )
    )
    by_type = agg("errorgate_redactions_total", "entity_type", fn="increase", window=RANGE)
    d = d.with_panel(bars("Redactions by entity type (time range)", "short", by_type, "{{entity_type}}"))
    for label in ("entity_type", "rule", "service"):
        name = label.replace("_", " ")
        d = d.with_panel(
            ts(
                f"Redactions by {name}",
                "cps",
                [(agg("errorgate_redactions_total", label), f"{{{{{label}}}}}")],
            )
        )
    encrypted = agg("errorgate_encrypted_values_total", "service, signal")
    d = d.with_panel(
        ts(
            "Values encrypted",
            "cps",
            [(encrypted, "{{service}} {{signal}}")],
            description="Attribute values and log bodies the encrypt processor replaced by enc:v1 values.",
        )
    )
    failures = agg("errorgate_redaction_failures_total", "signal", ENV)
    d = d.with_panel(ts("Fail-closed events by signal", "cps", [(failures, "{{signal}}")], width=24))
    return d


def retention() -> db.Dashboard:
    d = dashboard(
        "errorgate-retention",
        "errorgate / Retention",
        "Volume per retention class and items under legal hold.",
        ["retention"],
    )
    per_class = agg("errorgate_retention_items_total", "class", ENV, fn="increase", window=RANGE)
    d = d.with_panel(bars("Items per retention class (time range)", "short", per_class, "{{class}}"))
    volume = agg("errorgate_retention_items_total", "signal, class", ENV)
    d = d.with_panel(
        ts("Volume per retention class", "cps", [(volume, "{{signal}} {{class}}")], stacked=True)
    )
    holds = agg("errorgate_legal_hold_items_total", "hold", ENV, fn="increase", window=RANGE)
    d = d.with_panel(bars("Items under legal hold (time range)", "short", holds, "{{hold}}"))
    hold_rate = agg("errorgate_legal_hold_items_total", "hold", ENV)
    d = d.with_panel(ts("Legal hold items over time", "cps", [(hold_rate, "{{hold}}")]))
    return d
