"""``retention``: tag every span and log record with its retention class.

Config (defaults shown)::

    retention:
      policy: null    # path of a retention policy; null = bundled governance/retention.yaml
      catalog: null   # service catalog path; null = the gateway's catalog, else the bundled one

Sets ``errorgate.retention.class`` and ``errorgate.retention.days`` on every span and log record:
of the policy rules that match, the class with the most days wins (``default_class`` when none
does). An active legal hold — judged by the item's own timestamp (span start, log time, else the
time it was received) so replays are tagged as live traffic was — sets ``errorgate.legal_hold``
and moves the item to the hold's class; a hold never shortens retention.

Metric data points are passed through untagged: their attributes are series identity, so adding
retention attributes would split every series downstream; metric retention is set per stream in
the metrics backend.

Metrics: ``errorgate_retention_items_total{signal,class}``, ``errorgate_legal_hold_items_total{hold}``.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from prometheus_client import Counter

from errorgate import attributes
from errorgate.assembly import get_or_create
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor, register_processor
from errorgate.config import ConfigError
from errorgate.governance.catalog import ServiceCatalog, load_catalog
from errorgate.processors.retention_policy import (
    LOG_SEVERITIES,
    LegalHold,
    Matcher,
    RetentionClass,
    RetentionPolicy,
    Rule,
    load_policy,
)
from errorgate.signals import Batch, Signal

__all__ = [
    "LegalHold",
    "Matcher",
    "RetentionClass",
    "RetentionConfig",
    "RetentionPolicy",
    "RetentionProcessor",
    "Rule",
    "load_policy",
]

CLASS = "errorgate.retention.class"
DAYS = "errorgate.retention.days"
LEGAL_HOLD = "errorgate.legal_hold"


class RetentionConfig(ComponentConfig):
    policy: str | None = None
    catalog: str | None = None


# ---------------------------------------------------------------- matching

_WANTED = (
    "errorgate.severity",
    "errorgate.error.kind",
    "errorgate.error.category",
    "errorgate.error.domain",
    "errorgate.error.fingerprint",
    "errorgate.redaction.count",
)


_ANY_WANTED = re.compile(b"|".join(re.escape(k.encode()) for k in _WANTED))
_OURS = re.compile(re.escape(b"errorgate.retention.") + b"|" + re.escape(LEGAL_HOLD.encode()))
_NO_VALUES: dict[str, attributes.AttrValue] = {}


class _Item:
    """The facts matchers look at, gathered once per span or log record."""

    __slots__ = ("attrs", "compliance", "error", "log_severity", "service", "timestamp", "values")

    def __init__(
        self,
        service: str,
        compliance: frozenset[str],
        attrs: Iterable[KeyValue],
        log_severity: int | None,
        error: bool,
        timestamp: float,
        serialized: bytes | None = None,
    ) -> None:
        self.service = service
        self.compliance = compliance
        self.attrs = attrs
        self.log_severity = log_severity
        self.timestamp = timestamp
        if serialized is not None and not _ANY_WANTED.search(serialized):
            # No wanted key's text in the item: no attribute to decode (the common healthy item).
            self.error = error
            self.values = _NO_VALUES
            return
        found = {kv.key: kv.value for kv in attrs if kv.key in _WANTED}
        self.error = error or "errorgate.error.fingerprint" in found
        self.values = {k: attributes.to_python(v) for k, v in found.items()}


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def matches(m: Matcher, item: _Item) -> bool:
    v = item.values
    if m.service is not None and not any(fnmatch.fnmatchcase(item.service, g) for g in m.service):
        return False
    for wanted, key in (
        (m.severity, "errorgate.severity"),
        (m.kind, "errorgate.error.kind"),
        (m.category, "errorgate.error.category"),
        (m.domain, "errorgate.error.domain"),
    ):
        if wanted is not None and v.get(key) not in wanted:
            return False
    if m.compliance is not None and not item.compliance.intersection(m.compliance):
        return False
    if m.pii is not None:
        count = v.get("errorgate.redaction.count")
        has_pii = isinstance(count, int | float) and not isinstance(count, bool) and count > 0
        if has_pii != m.pii:
            return False
    if m.error is not None and item.error != m.error:
        return False
    if m.min_log_severity is not None and (
        item.log_severity is None or item.log_severity < LOG_SEVERITIES[m.min_log_severity]
    ):
        return False
    # A level's band runs up to the next level's number (DEBUG covers DEBUG..DEBUG4).
    if m.max_log_severity is not None and (
        item.log_severity is None or not 0 < item.log_severity < LOG_SEVERITIES[m.max_log_severity] + 4
    ):
        return False
    if m.attributes is not None:
        for key, values in m.attributes.items():
            actual = attributes.get(item.attrs, key)
            if actual is None or _text(actual) not in {_text(x) for x in values}:
                return False
    return True


# ---------------------------------------------------------------- processor


class RetentionProcessor(Processor):
    signals = frozenset(Signal)

    def __init__(self, policy: RetentionPolicy, catalog: ServiceCatalog, context: ComponentContext) -> None:
        self.policy = policy
        self.catalog = catalog
        self.context = context
        self._days = {name: c.days for name, c in policy.classes.items()}
        self._compliance: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple[object, ...], str] = {}
        self._memoizable = all(rule.match.attributes is None for rule in policy.rules)
        self._tags = {
            name: [
                KeyValue(key=CLASS, value=AnyValue(string_value=name)),
                KeyValue(key=DAYS, value=AnyValue(int_value=days)),
            ]
            for name, days in self._days.items()
        }
        registry = context.telemetry.registry
        self._items: Counter = get_or_create(
            registry,
            "errorgate_retention_items",
            lambda: Counter(
                "errorgate_retention_items",
                "Items tagged per retention class",
                ["signal", "class"],
                registry=registry,
            ),
        )
        self._holds: Counter = get_or_create(
            registry,
            "errorgate_legal_hold_items",
            lambda: Counter(
                "errorgate_legal_hold_items", "Items under a legal hold", ["hold"], registry=registry
            ),
        )

    def classify(self, item: _Item) -> tuple[str, str | None]:
        """(retention class, legal hold id or None) for one item."""
        chosen = self._rule_class(item)
        for hold in self.policy.legal_holds:
            if hold.active_at(item.timestamp) and matches(hold.match, item):
                hold_class = hold.class_ or self.policy.legal_hold_class
                if self._days[hold_class] >= self._days[chosen]:
                    chosen = hold_class
                return chosen, hold.id
        return chosen, None

    def _rule_class(self, item: _Item) -> str:
        # Without attribute matchers the rules read only these facts: memoized (bounded).
        key = None
        if self._memoizable:
            key = (item.service, item.compliance, item.error, item.log_severity, tuple(item.values.items()))
            try:
                found = self._memo.get(key)
            except TypeError:  # an unhashable (list) attribute value: not memoized
                key, found = None, None
            if found is not None:
                return found
        chosen = self.policy.default_class
        best = -1
        for rule in self.policy.rules:
            days = self._days[rule.class_]
            if days > best and matches(rule.match, item):
                chosen, best = rule.class_, days
        if key is not None:
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[key] = chosen
        return chosen

    def process(self, batch: Batch) -> Output:
        tally: Tally[str] = Tally()
        holds: Tally[str] = Tally()
        if batch.signal is Signal.TRACES:
            traces = cast(ExportTraceServiceRequest, batch.request)
            for rs in traces.resource_spans:
                service, scopes = self._service(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        ts = span.start_time_unix_nano / 1e9 or batch.received_at
                        error = span.status.code == Status.STATUS_CODE_ERROR
                        data = span.SerializeToString()
                        item = _Item(service, scopes, span.attributes, None, error, ts, data)
                        self._tag(span.attributes, item, tally, holds, data)
        elif batch.signal is Signal.LOGS:
            logs = cast(ExportLogsServiceRequest, batch.request)
            for rl in logs.resource_logs:
                service, scopes = self._service(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9 or batch.received_at
                        sev = rec.severity_number
                        data = rec.SerializeToString()
                        error = sev >= LOG_SEVERITIES["ERROR"]
                        item = _Item(service, scopes, rec.attributes, sev, error, ts, data)
                        self._tag(rec.attributes, item, tally, holds, data)
        signal = batch.signal.value
        cap = self.context.telemetry.cap
        for name, n in tally.items():
            self._items.labels(signal, cap("class", name)).inc(n)
        for hold_id, n in holds.items():
            self._holds.labels(cap("hold", hold_id)).inc(n)
        return Output.of(batch)

    def _tag(self, attrs: Any, item: _Item, tally: Tally[str], holds: Tally[str], data: bytes) -> None:
        name, hold = self.classify(item)
        if _OURS.search(data):  # tagged before (e.g. by an upstream gateway): replace in place
            attributes.set_value(attrs, CLASS, name)
            attributes.set_value(attrs, DAYS, self._days[name])
            if hold is not None:
                attributes.set_value(attrs, LEGAL_HOLD, hold)
        else:
            attrs.extend(self._tags[name])
            if hold is not None:
                attrs.append(KeyValue(key=LEGAL_HOLD, value=AnyValue(string_value=hold)))
        if hold is not None:
            holds[hold] += 1
        tally[name] += 1

    def _service(self, resource_attrs: Iterable[KeyValue]) -> tuple[str, frozenset[str]]:
        service = attributes.get_str(resource_attrs, "service.name", "unknown_service")
        scopes = self._compliance.get(service)
        if scopes is None:
            scopes = frozenset(self.catalog.lookup(service).compliance)
            if len(self._compliance) < 10_000:  # bounded: service names come from the senders
                self._compliance[service] = scopes
        return service, scopes


@register_processor("retention", RetentionConfig)
def create_retention(config: RetentionConfig, context: ComponentContext) -> Processor:
    policy = load_policy(config.policy)
    shared = context.service("catalog")
    if isinstance(shared, ServiceCatalog) and config.catalog is None:
        catalog = shared
    else:
        try:
            catalog = load_catalog(config.catalog)
        except ValueError as e:
            raise ConfigError(f"processors.{context.component_id}.catalog: {e}") from None
    return RetentionProcessor(policy, catalog, context)
