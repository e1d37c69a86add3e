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

The policy file (``policy``) is re-read without a restart: on SIGHUP (``Processor.reload``) and
when its modification time, size or inode changes (checked at most every ``watch_interval``).
New items are tagged by the new policy -- a legal hold added to the file applies within seconds.
A file that does not load (bad YAML, an unknown key, a hold naming an unknown class) is logged
with its error and the policy in force stays.

Metric data points are passed through untagged: their attributes are series identity, so adding
retention attributes would split every series downstream; metric retention is set per stream in
the metrics backend.

Metrics: ``errorgate_retention_items_total{signal,class}``, ``errorgate_legal_hold_items_total{hold}``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter as Tally
from typing import Any, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import Counter
from pydantic import Field

from errorgate import attributes
from errorgate.component import ComponentConfig, ComponentContext, Factory, Output, Processor
from errorgate.config import ConfigError, Duration
from errorgate.extensions.catalog import shared_catalog
from errorgate.governance.catalog import ServiceCatalog, load_catalog
from errorgate.pipeline.assembly.assembler import get_or_create
from errorgate.processors.retention_policy import (
    ANY_WANTED,
    LOG_SEVERITIES,
    Item,
    LegalHold,
    Matcher,
    RetentionClass,
    RetentionPolicy,
    Rule,
    load_policy,
    matches,
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
    watch_interval: Duration = Field(
        default=2.0, ge=0, description="how often the policy file's mtime is checked (0: SIGHUP only)"
    )


log = logging.getLogger(__name__)
_OURS = re.compile(re.escape(b"errorgate.retention.") + b"|" + re.escape(LEGAL_HOLD.encode()))
_PREFIX = b"errorgate."  # every wanted key and every tag of ours starts with it
_ERROR = Status.STATUS_CODE_ERROR


# ---------------------------------------------------------------- processor


class RetentionProcessor(Processor):
    signals = frozenset(Signal)

    def __init__(
        self,
        policy: RetentionPolicy,
        catalog: ServiceCatalog,
        context: ComponentContext,
        config: RetentionConfig | None = None,
    ) -> None:
        self.catalog = catalog
        self.context = context
        self._config = config or RetentionConfig()
        self._watched = _file_state(self._config.policy)
        self._next_check = time.monotonic() + self._config.watch_interval
        self._use(policy)
        self._children: dict[tuple[str, str], Any] = {}  # metric children by labels
        self._resources: dict[bytes, tuple[str, frozenset[str]]] = {}
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

    def _use(self, policy: RetentionPolicy) -> None:
        """Make ``policy`` the one in force, with everything derived from it."""
        self.policy = policy
        self._days = {name: c.days for name, c in policy.classes.items()}
        self._compliance: dict[str, frozenset[str]] = {}
        self._memo: dict[tuple[object, ...], str] = {}
        self._memoizable = all(rule.match.attributes is None for rule in policy.rules)
        # The two tags of each class, serialized as a span's and as a log record's attributes
        # field: merging those bytes into an item appends both tags in one C call.
        self._tags = {
            name: {
                kind: kind(
                    attributes=[
                        KeyValue(key=CLASS, value=AnyValue(string_value=name)),
                        KeyValue(key=DAYS, value=AnyValue(int_value=days)),
                    ]
                ).SerializeToString()
                for kind in (Span, LogRecord)
            }
            for name, days in self._days.items()
        }
        # Without legal holds or attribute matchers, an item's class depends only on its service,
        # error flag, log severity and the wanted attributes: requests without any of those
        # attributes (nor tags of ours) are tagged per scope, not per item.
        self._per_scope = self._memoizable and not policy.legal_holds
        self._by_service: dict[tuple[str, frozenset[str]], tuple[str, str]] = {}

    # ---------------------------------------------------------------- reload

    def reload(self) -> None:
        """SIGHUP: re-read the policy file now."""
        self._load_policy()

    def _watch(self) -> None:
        """Re-read the policy file when it changed (a stat at most every ``watch_interval``)."""
        if self._config.policy is None or self._config.watch_interval <= 0:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._config.watch_interval
        state = _file_state(self._config.policy)
        if state != self._watched:
            self._load_policy()

    def _load_policy(self) -> None:
        if self._config.policy is None:
            return  # the bundled policy changes only with errorgate itself
        self._watched = _file_state(self._config.policy)
        try:
            policy = load_policy(self._config.policy)
        except ConfigError as e:
            log.error(
                "processors.%s.policy: reload failed, the policy in force stays: %s",
                self.context.component_id,
                e,
            )
            return
        self._use(policy)
        log.info(
            "processors.%s.policy: reloaded (%d rules, %d legal holds)",
            self.context.component_id,
            len(policy.rules),
            len(policy.legal_holds),
        )

    def classify(self, item: Item) -> tuple[str, str | None]:
        """(retention class, legal hold id or None) for one item."""
        chosen = self._rule_class(item)
        for hold in self.policy.legal_holds:
            if hold.active_at(item.timestamp) and matches(hold.match, item):
                hold_class = hold.class_ or self.policy.legal_hold_class
                if self._days[hold_class] >= self._days[chosen]:
                    chosen = hold_class
                return chosen, hold.id
        return chosen, None

    def _rule_class(self, item: Item) -> str:
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

    def poll(self, now: float) -> Output:
        self._watch()
        return Output()

    def process(self, batch: Batch) -> Output:
        self._watch()
        tally: Tally[str] = Tally()
        holds: Tally[str] = Tally()
        if batch.signal is Signal.TRACES:
            self._traces(cast(ExportTraceServiceRequest, batch.request), batch.received_at, tally, holds)
        elif batch.signal is Signal.LOGS:
            self._logs(cast(ExportLogsServiceRequest, batch.request), batch.received_at, tally, holds)
        signal = batch.signal.value
        cap = self.context.telemetry.cap
        for name, n in tally.items():
            child = self._children.get((signal, name))
            if child is None:  # labels() costs microseconds: each child is looked up once
                child = self._children[signal, name] = self._items.labels(signal, cap("class", name))
            child.inc(n)
        for hold_id, n in holds.items():
            self._holds.labels(cap("hold", hold_id)).inc(n)
        if batch.signal is Signal.METRICS:
            return Output.of(batch)
        # Every item was tagged and counted once: the tally is the item count (no recount).
        return Output(batches=[batch] if tally.total() else [])

    def _plain(self, data: bytes) -> tuple[bool, bool]:
        """(the class can be set per scope, the items may hold tags of ours), from ``data``: the
        scope's items serialized, joined (a match across two items is a false alarm: per item).

        Per scope needs no legal holds or attribute matchers, and no wanted attribute nor tag of
        ours in any item; every key that matters starts with "errorgate.", so one C-level search
        rules all out in the common case (no errorgate stage before). The items' bytes, not the
        request's: the per-item path needs them anyway (serializing twice cost more than a search)."""
        if _PREFIX not in data:
            return self._per_scope, False
        ours = _OURS.search(data) is not None
        return self._per_scope and not ours and not ANY_WANTED.search(data), ours

    def _traces(
        self, request: ExportTraceServiceRequest, received_at: float, tally: Tally[str], holds: Tally[str]
    ) -> None:
        # Per item, an item without a wanted attribute or tag of ours still gets its scope's class.
        simple = self._per_scope
        merge = Span.MergeFromString
        for rs in request.resource_spans:
            service, scopes = self._service(rs.resource)
            for ss in rs.scope_spans:
                spans = list(ss.spans)
                datas = [s.SerializeToString() for s in spans]
                per_scope, ours = self._plain(b"".join(datas))
                if per_scope:
                    healthy, failing = self._span_classes(service, scopes)
                    if healthy == failing:  # the status does not matter here: one class for all
                        tag = self._tags[healthy][Span]
                        for span in spans:
                            merge(span, tag)
                        tally[healthy] += len(spans)
                    else:
                        codes = [s.status.code == _ERROR for s in spans]
                        by_error = (self._tags[healthy][Span], self._tags[failing][Span])
                        for span, error in zip(spans, codes, strict=True):
                            merge(span, by_error[error])
                        failed = codes.count(True)
                        tally[failing] += failed
                        tally[healthy] += len(spans) - failed
                    continue
                for span, data in zip(spans, datas, strict=True):
                    error = span.status.code == _ERROR
                    mine = ours and _OURS.search(data) is not None
                    if simple and not mine and not ANY_WANTED.search(data):
                        # Nothing the rules read beyond service and status: the per-scope class.
                        name = self._span_classes(service, scopes)[error]
                        merge(span, self._tags[name][Span])
                        tally[name] += 1
                        continue
                    ts = span.start_time_unix_nano / 1e9 or received_at
                    item = Item(service, scopes, span.attributes, None, error, ts, data)
                    self._tag(span, item, tally, holds, mine)

    def _span_classes(self, service: str, scopes: frozenset[str]) -> tuple[str, str]:
        """(class of a healthy span, class of a failing span) of a service, with no wanted attributes."""
        found = self._by_service.get((service, scopes))
        if found is None:
            if len(self._by_service) >= 10_000:
                self._by_service.clear()
            found = self._by_service[service, scopes] = (
                self._rule_class(Item(service, scopes, (), None, False, 0.0, b"")),
                self._rule_class(Item(service, scopes, (), None, True, 0.0, b"")),
            )
        return found

    def _logs(
        self, request: ExportLogsServiceRequest, received_at: float, tally: Tally[str], holds: Tally[str]
    ) -> None:
        simple = self._per_scope  # (as in _traces)
        merge = LogRecord.MergeFromString
        error_severity = LOG_SEVERITIES["ERROR"]
        for rl in request.resource_logs:
            service, scopes = self._service(rl.resource)
            by_severity: dict[int, str] = {}  # the class per severity number, for this service
            for sl in rl.scope_logs:
                records = list(sl.log_records)
                datas = [r.SerializeToString() for r in records]
                per_scope, ours = self._plain(b"".join(datas))
                if per_scope:
                    names = []
                    for sev in [r.severity_number for r in records]:
                        name = by_severity.get(sev)
                        if name is None:
                            item = Item(service, scopes, (), sev, sev >= error_severity, 0.0, b"")
                            name = by_severity[sev] = self._rule_class(item)
                        names.append(name)
                    for rec, name in zip(records, names, strict=True):
                        merge(rec, self._tags[name][LogRecord])
                    tally.update(names)
                    continue
                for rec, data in zip(records, datas, strict=True):
                    sev = rec.severity_number
                    mine = ours and _OURS.search(data) is not None
                    if simple and not mine and not ANY_WANTED.search(data):
                        # Nothing the rules read beyond service and severity: the per-scope class.
                        name = by_severity.get(sev)
                        if name is None:
                            item = Item(service, scopes, (), sev, sev >= error_severity, 0.0, b"")
                            name = by_severity[sev] = self._rule_class(item)
                        merge(rec, self._tags[name][LogRecord])
                        tally[name] += 1
                        continue
                    ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9 or received_at
                    item = Item(service, scopes, rec.attributes, sev, sev >= error_severity, ts, data)
                    self._tag(rec, item, tally, holds, mine)

    def _tag(
        self, target: Span | LogRecord, item: Item, tally: Tally[str], holds: Tally[str], ours: bool
    ) -> None:
        name, hold = self.classify(item)
        attrs = target.attributes
        if ours:  # tagged before (e.g. by an upstream gateway): replace in place
            attributes.set_value(attrs, CLASS, name)
            attributes.set_value(attrs, DAYS, self._days[name])
            if hold is not None:
                attributes.set_value(attrs, LEGAL_HOLD, hold)
        else:
            target.MergeFromString(self._tags[name][type(target)])
            if hold is not None:
                attrs.append(KeyValue(key=LEGAL_HOLD, value=AnyValue(string_value=hold)))
        if hold is not None:
            holds[hold] += 1
        tally[name] += 1

    def _service(self, resource: Resource) -> tuple[str, frozenset[str]]:
        # Memoized per serialized resource (bounded): a resource's bytes are one C call, finding
        # service.name among its attributes is a Python loop.
        key = resource.SerializeToString()
        found = self._resources.get(key)
        if found is None:
            service = attributes.get_str(resource.attributes, "service.name", "unknown_service")
            scopes = self._compliance.get(service)
            if scopes is None:
                scopes = frozenset(self.catalog.lookup(service).compliance)
                if len(self._compliance) < 10_000:  # bounded: service names come from the senders
                    self._compliance[service] = scopes
            if len(self._resources) >= 10_000:
                self._resources.clear()
            found = self._resources[key] = (service, scopes)
        return found


def create_retention(config: RetentionConfig, context: ComponentContext) -> Processor:
    policy = load_policy(config.policy)
    shared = shared_catalog(context, config.catalog)
    if shared is not None:
        catalog = shared
    else:
        try:
            catalog = load_catalog(config.catalog)
        except ValueError as e:
            raise ConfigError(f"processors.{context.component_id}.catalog: {e}") from None
    return RetentionProcessor(policy, catalog, context, config)


def _file_state(path: str | None) -> tuple[int, int, int] | None:
    """What tells a changed file: (mtime in ns, size, inode); None when absent or unreadable."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


factory: Factory[RetentionConfig, Processor] = Factory(
    "retention", RetentionConfig, create_retention, RetentionProcessor
)
