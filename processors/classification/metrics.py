"""The error metrics ``classify`` exports (names fixed in docs/METRICS.md).

Every label value goes through the gateway's ``LabelCap`` (past a label's cap it reads
``_other``); the caps are the cost/granularity trade-off and come from the processor's
``metrics.label_caps`` setting.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from errorgate.governance.catalog import ServiceCatalog, ServiceEntry
from errorgate.telemetry import OTHER, LabelCap

_MAX_CHILDREN = 65536
# Errors this far apart belong to separate runs (``errorgate_first_error_timestamp_seconds``):
# the error-rate alerts' default window, so a run that stops firing them also ends here.
RUN_QUIET_SECONDS = 300.0
DEFAULT_LABEL_CAPS: dict[str, int] = {
    "service": 200,
    "component": 200,
    "domain": 20,
    "kind": 10,
    "severity": 10,
    "category": 50,
    "version": 500,
    "origin_service": 200,
    "team": 50,
    "tier": 10,
}


class ErrorMetrics:
    def __init__(self, registry: CollectorRegistry, cap: LabelCap) -> None:
        self.cap = cap
        # In this order: a registry exposes its metrics in the order they were created.
        self._create_request_metrics(registry)
        self._create_error_metrics(registry)
        self._create_deployment_metrics(registry)
        self._create_episode_metrics(registry)
        self._create_cascade_metrics(registry)
        self._create_catalog_metrics(registry)
        self._described: set[str] = set()
        # Counter increments of one batch, by (metric, capped labels): one ``labels().inc(n)`` each
        # in ``flush``. Labels are capped at once so caps admit values in the order items arrive.
        self._pending: Tally[tuple[Counter, tuple[str, ...]]] = Tally()
        # ``labels()`` takes a lock and builds a key per call: the children of these counters are
        # kept (bounded by the label caps; nothing ever removes them from the metric).
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        # Capped labels of ``error`` by their raw values. A cap's answer for a value never changes
        # (admitted values stay admitted, a full cap stays full), so the memo is always valid.
        self._error_keys: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[str, str] | None]] = {}

    def _create_request_metrics(self, r: CollectorRegistry) -> None:
        """Requests and failed requests: the SLO's events."""
        self.requests = Counter(
            "errorgate_requests", "Requests seen (SERVER/CONSUMER or root spans)", ["service"], registry=r
        )
        # The SLO's bad events: requests whose span failed. errorgate_errors_total counts every failing
        # span and log record (a cascade fails several per request), so it cannot be the ratio's numerator.
        self.failed_requests = Counter(
            "errorgate_failed_requests", "Requests whose span failed", ["service"], registry=r
        )

    def _create_error_metrics(self, r: CollectorRegistry) -> None:
        """Failing items by their classification."""
        self.errors = Counter(
            "errorgate_errors",
            "Failing spans and log records",
            ["service", "component", "domain", "kind", "severity", "category"],
            registry=r,
        )

    def _create_deployment_metrics(self, r: CollectorRegistry) -> None:
        """Errors and requests per service.version: one deployment beside the previous one."""
        self.by_version = Counter(
            "errorgate_errors_by_version",
            "Errors per service.version (deployment comparison)",
            ["service", "version"],
            registry=r,
        )
        # With errorgate_failed_requests_by_version: a deployment's failure ratio beside the
        # previous one's (errors_by_version counts items, several per failing request).
        self.requests_by_version = Counter(
            "errorgate_requests_by_version",
            "Requests seen per service.version (deployment comparison)",
            ["service", "version"],
            registry=r,
        )
        self.failed_requests_by_version = Counter(
            "errorgate_failed_requests_by_version",
            "Requests whose span failed, per service.version",
            ["service", "version"],
            registry=r,
        )

    def _create_episode_metrics(self, r: CollectorRegistry) -> None:
        """Starts of error episodes and first sightings of fingerprints."""
        self.episodes = Counter(
            "errorgate_error_episodes", "Error episodes started", ["service", "kind"], registry=r
        )
        self.new_fingerprints = Counter(
            "errorgate_new_fingerprints", "First sightings of an error fingerprint", ["service"], registry=r
        )
        # Per service, not per fingerprint: fingerprints are unbounded, and an alert names a
        # service. The incident engine reads it (through the alert's ``first_error_at``
        # annotation) as the start of the incident, for MTTD.
        self.first_error = Gauge(
            "errorgate_first_error_timestamp_seconds",
            "Unix time of the first error of the service's current run of errors",
            ["service"],
            registry=r,
        )
        # (start, last error) of each service's current run, by capped service.
        self._runs: dict[str, list[float]] = {}

    def _create_cascade_metrics(self, r: CollectorRegistry) -> None:
        """What the trace analysis finds: cascade roles, multi-service incidents, retries."""
        self.cascade = Counter(
            "errorgate_cascade_errors",
            "Failing spans by their role in a within-trace cascade",
            ["service", "origin_service", "role"],
            registry=r,
        )
        self.incidents = Counter(
            "errorgate_incidents", "Multi-service incidents opened", ["origin_service"], registry=r
        )
        self.incident_services = Gauge(
            "errorgate_active_incident_services",
            "1 while the service is part of an active multi-service incident",
            ["service"],
            registry=r,
        )
        self.retries = Counter(
            "errorgate_retried_operations",
            "Retried operations by final outcome",
            ["service", "outcome"],
            registry=r,
        )

    def _create_catalog_metrics(self, r: CollectorRegistry) -> None:
        """The service catalog's facts the alert rules join on (set by ``describe_service``)."""
        self.threshold = Gauge(
            "errorgate_error_rate_threshold",
            "Errors per minute from the service catalog above which to alert or open a review",
            ["service", "level"],
            registry=r,
        )
        self.slo = Gauge(
            "errorgate_slo_objective",
            "Availability objective from the service catalog",
            ["service"],
            registry=r,
        )
        self.info = Gauge(
            "errorgate_service_info",
            "Service catalog entry (value 1)",
            ["service", "team", "tier"],
            registry=r,
        )

    def flush(self) -> None:
        """Apply the counts gathered since the last flush (the processor calls it after each batch)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, Tally()
        children = self._children
        for key, n in pending.items():
            child = children.get(key)
            if child is None:
                if len(children) >= _MAX_CHILDREN:
                    children.clear()
                child = children[key] = key[0].labels(*key[1])
            child.inc(n)

    def describe_catalog(self, catalog: ServiceCatalog) -> None:
        for name, entry in catalog.services.items():
            self.describe_service(name, entry)

    def describe_service(self, service: str, entry: ServiceEntry) -> None:
        """Export the catalog facts the alert rules join on (once per service)."""
        if service in self._described:
            return
        self._described.add(service)
        svc = self.cap("service", service)
        if svc != service:
            return  # an ``_other`` row would mix thresholds of unrelated services
        self.threshold.labels(svc, "alert").set(entry.error_rate.alert_per_minute)
        self.threshold.labels(svc, "review").set(entry.error_rate.review_per_minute)
        self.slo.labels(svc).set(entry.slo)
        self.info.labels(svc, self.cap("team", entry.owner), self.cap("tier", str(entry.tier))).set(1)

    def request(self, service: str, version: str = "", n: int = 1, failed: int = 0) -> None:
        svc = self.cap("service", service)
        self._pending[(self.requests, (svc,))] += n
        if failed:
            self._pending[(self.failed_requests, (svc,))] += failed
        if version:
            by_version = (svc, self.cap("version", version))
            self._pending[(self.requests_by_version, by_version)] += n
            if failed:
                self._pending[(self.failed_requests_by_version, by_version)] += failed

    def error(self, labels: Mapping[str, str], version: str) -> None:
        raw = (
            labels["service"],
            labels["component"],
            labels["domain"],
            labels["kind"],
            labels["severity"],
            labels["category"],
            version,
        )
        found = self._error_keys.get(raw)
        if found is None:
            c = self.cap
            svc = c("service", raw[0])
            key = (
                svc,
                c("component", raw[1]),
                c("domain", raw[2]),
                c("kind", raw[3]),
                c("severity", raw[4]),
                c("category", raw[5]),
            )
            if len(self._error_keys) >= _MAX_CHILDREN:
                self._error_keys.clear()
            found = self._error_keys[raw] = (key, (svc, c("version", version)) if version else None)
        self._pending[(self.errors, found[0])] += 1
        if found[1] is not None:
            self._pending[(self.by_version, found[1])] += 1

    def forget_version(self, service: str, version: str, still_used: bool) -> None:
        """Remove a (service, version)'s series once its deploy state aged out; its version
        label value is released for later deploys unless another service still uses it."""
        self.flush()
        svc = self.cap("service", service)
        by_version = (self.by_version, self.requests_by_version, self.failed_requests_by_version)
        for metric in by_version:
            try:
                metric.remove(svc, version)
            except KeyError:
                pass  # never counted (e.g. only requests, no errors)
        for key in [k for k in self._children if k[0] in by_version and k[1] == (svc, version)]:
            del self._children[key]
        if not still_used:
            self.cap.release("version", version)
        # Memoized answers for this version, and those that read ``_other`` (a place is free now).
        for raw in [
            r for r, found in self._error_keys.items() if found[1] and found[1][1] in (version, OTHER)
        ]:
            del self._error_keys[raw]

    def episode(self, service: str, kind: str) -> None:
        self.episodes.labels(self.cap("service", service), self.cap("kind", kind)).inc()

    def error_at(self, service: str, ts: float) -> None:
        """One error at telemetry time ``ts``: a run of errors starts after ``RUN_QUIET_SECONDS``
        without one, and the gauge holds the run's first error."""
        svc = self.cap("service", service)
        run = self._runs.get(svc)
        if run is None or ts - run[1] > RUN_QUIET_SECONDS:
            self._runs[svc] = [ts, ts]
            self.first_error.labels(svc).set(ts)
        elif ts > run[1]:
            run[1] = ts
        elif ts < run[0] and run[0] - ts <= RUN_QUIET_SECONDS:  # a late item of the same run
            run[0] = ts
            self.first_error.labels(svc).set(ts)

    def new_fingerprint(self, service: str) -> None:
        self.new_fingerprints.labels(self.cap("service", service)).inc()

    def cascade_error(self, service: str, origin_service: str, role: str) -> None:
        key = (self.cap("service", service), self.cap("origin_service", origin_service), role)
        self._pending[(self.cascade, key)] += 1

    def retried(self, service: str, outcome: str) -> None:
        self.retries.labels(self.cap("service", service), outcome).inc()

    def incident_opened(self, origin_service: str) -> None:
        self.incidents.labels(self.cap("origin_service", origin_service)).inc()

    def incident_member(self, service: str, active: bool) -> None:
        self.incident_services.labels(self.cap("service", service)).set(1 if active else 0)
