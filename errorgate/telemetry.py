"""errorgate's own Prometheus metrics (names are public contract: see CONVENTIONS).

Each gateway owns one ``Telemetry`` with its own registry, so several gateways can
run in one process (tests, ``errorgate demo``). Every label value passes through a
``LabelCap`` so cardinality stays bounded: past the cap a label reads ``_other``.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

OTHER = "_other"
DEFAULT_LABEL_CAP = 200

# Reasons the core itself reports (components declare theirs: ``Capabilities.drop_reasons``).
# Their counters exist at 0 from start-up, so ``rate()`` and ``increase()`` see the first event
# and panels show 0 rather than "No data" (Prometheus' instrumentation guidance).
DROP_REASONS = ("rejected_by_backend", "queue_record_unreadable", "duplicate", "no_pipeline")
DEAD_LETTER_REASONS = (
    "invalid_item",
    "processor_error",
    "queue_full",
    "permanent_export_error",
    "retry_disabled",
    "max_elapsed_time",
)
EXPORT_OUTCOMES = ("success", "retryable", "permanent")


class LabelCap:
    """Admits at most ``cap`` distinct values per label name; later ones become ``_other``."""

    def __init__(self, caps: Mapping[str, int] | None = None, default: int = DEFAULT_LABEL_CAP) -> None:
        self._caps = dict(caps or {})
        self._default = default
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def set_cap(self, label: str, cap: int) -> None:
        self._caps[label] = cap

    def caps(self) -> dict[str, int]:
        """The caps set so far by label (labels not listed use the default cap)."""
        return dict(self._caps)

    def release(self, label: str, value: str) -> None:
        """Give a value's place back (its series are gone), so a later value can take it."""
        with self._lock:
            self._seen.get(label, set()).discard(value)

    def __call__(self, label: str, value: str) -> str:
        seen = self._seen.get(label)
        if seen is not None and value in seen:
            return value
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) >= self._caps.get(label, self._default):
                return OTHER
            seen.add(value)
            return value


class Telemetry:
    def __init__(self, label_caps: Mapping[str, int] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cap = LabelCap(label_caps)
        self._children: dict[tuple[object, ...], Any] = {}
        self._create_pipeline_metrics(self.registry)
        self._create_storage_metrics(self.registry)

    def _create_pipeline_metrics(self, r: CollectorRegistry) -> None:
        self.received = Counter(
            "errorgate_received_items", "Items accepted from receivers", ["signal"], registry=r
        )
        self.exported = Counter(
            "errorgate_exported_items", "Items delivered by an exporter", ["signal", "exporter"], registry=r
        )
        self.dropped = Counter(
            "errorgate_dropped_items",
            "Items intentionally dropped, by reason",
            ["signal", "reason"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "errorgate_dead_lettered_items",
            "Items written to the dead-letter store",
            ["signal", "reason"],
            registry=r,
        )
        self.rejected_batches = Counter(
            "errorgate_rejected_requests",
            "Export requests refused before acceptance (auth, size, malformed, backpressure)",
            ["receiver", "reason"],
            registry=r,
        )
        self.duplicate_batches = Counter(
            "errorgate_duplicate_batches",
            "Re-sent batches acknowledged without forwarding",
            ["signal"],
            registry=r,
        )
        self.queue_items = Gauge(
            "errorgate_queue_items", "Items waiting in an exporter queue", ["exporter"], registry=r
        )
        self.queue_bytes = Gauge(
            "errorgate_queue_bytes", "Bytes in an exporter queue", ["exporter"], registry=r
        )
        self.circuit_state = Gauge(
            "errorgate_exporter_circuit_state",
            "Exporter circuit breaker: 0 closed, 1 half-open, 2 open",
            ["exporter"],
            registry=r,
        )
        self.export_attempts = Counter(
            "errorgate_export_attempts", "Export attempts by outcome", ["exporter", "outcome"], registry=r
        )
        self.processor_latency = Histogram(
            "errorgate_processor_duration_seconds",
            "Time a processor spends on one batch",
            ["processor", "signal"],
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.processor_failures = Counter(
            "errorgate_processor_failures",
            "Batches a processor failed on",
            ["processor", "signal"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "errorgate_processor_worker_restarts",
            "Times the processor worker process was restarted (it died or stopped answering)",
            registry=r,
        )

    def _create_storage_metrics(self, r: CollectorRegistry) -> None:
        """Disk pressure, write failures, dead-letter expiry, queue recovery, memory."""
        self.disk_free = Gauge(
            "errorgate_disk_free_bytes",
            "Free bytes on the filesystem of a directory errorgate writes to (data_dir, queues)",
            ["directory"],
            registry=r,
        )
        self.disk_pressure = Gauge(
            "errorgate_disk_pressure",
            "1 while a directory's free space is below service.disk.min_free_mib (new data is refused)",
            registry=r,
        )
        self.storage_write_errors = Counter(
            "errorgate_storage_write_errors",
            "Writes to disk that failed (the data was not acknowledged, or stays held for a retry)",
            ["store", "error"],
            registry=r,
        )
        self.dead_letter_expired = Counter(
            "errorgate_dead_letter_expired_items",
            "Dead-lettered items removed by service.dead_letter limits or the disk floor, oldest first",
            ["signal", "limit"],
            registry=r,
        )
        # Known label sets exist at 0 from the start, so rate() sees the first increment and a
        # panel shows 0, not "No data" (Prometheus' guidance for counters of rare events).
        for signal in ("traces", "logs", "metrics"):
            for limit in ("max_size_mib", "max_age", "disk_space"):
                self.dead_letter_expired.labels(signal, limit)
        for store in ("queue", "dead_letter", "hold"):
            self.storage_write_errors.labels(store, "ENOSPC")
        self.dead_letter_bytes = Gauge(
            "errorgate_dead_letter_bytes", "Bytes in the dead-letter store", registry=r
        )
        self.queue_recovery_skipped = Counter(
            "errorgate_queue_recovery_skipped_bytes",
            "Unreadable bytes a persistent queue skipped at start-up (damage; never a torn tail)",
            ["exporter"],
            registry=r,
        )
        self.memory_rss = Gauge(
            "errorgate_memory_rss_bytes",
            "Resident memory of errorgate's process tree (gateway, processor worker, detection workers)",
            registry=r,
        )
        self.memory_refusing = Gauge(
            "errorgate_memory_limiter_refusing",
            "1 while memory is above service.memory_limiter's soft limit (new data is refused)",
            registry=r,
        )

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the prometheus lookup takes a lock and builds
        keys on every call, and these run several times per request. Label values must already
        have gone through ``cap``."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            # A race only fetches the same child twice: ``labels`` is idempotent.
            found = self._children[key] = metric.labels(*labels)
        return found

    def declare_pipeline(
        self, signal: str, processors: list[str], exporters: list[str], drop_reasons: frozenset[str]
    ) -> None:
        """Every label set a pipeline can report, at 0 (see ``DROP_REASONS``)."""
        self.child(self.received, signal)
        self.child(self.duplicate_batches, signal)
        for reason in sorted(drop_reasons | set(DROP_REASONS)):
            self.child(self.dropped, signal, self.cap("reason", reason))
        for reason in DEAD_LETTER_REASONS:
            self.child(self.dead_lettered, signal, self.cap("reason", reason))
        for processor in processors:
            self.child(self.processor_failures, processor, signal)
        for exporter in exporters:
            label = self.cap("exporter", exporter)
            self.child(self.exported, signal, label)
            for outcome in EXPORT_OUTCOMES:
                self.child(self.export_attempts, label, outcome)

    def record_received(self, signal: str, n: int) -> None:
        if n:
            self.child(self.received, signal).inc(n)

    def record_dropped(self, signal: str, reason: str, n: int) -> None:
        if n:
            self.child(self.dropped, signal, self.cap("reason", reason)).inc(n)

    def record_write_error(self, store: str, error: OSError) -> None:
        name = errno.errorcode.get(error.errno or 0, "EIO")
        self.child(self.storage_write_errors, store, name).inc()

    def record_dead_lettered(self, signal: str, reason: str, n: int) -> None:
        if n:
            self.child(self.dead_lettered, signal, self.cap("reason", reason)).inc(n)

    def record_exported(self, signal: str, exporter: str, n: int) -> None:
        if n:
            self.child(self.exported, signal, exporter).inc(n)
