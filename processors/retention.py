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
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from prometheus_client import Counter
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from errorgate import attributes
from errorgate.assembly import get_or_create
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor, register_processor
from errorgate.config import ConfigError
from errorgate.governance.catalog import ComplianceScope, ServiceCatalog, load_catalog
from errorgate.signals import Batch, Signal

CLASS = "errorgate.retention.class"
DAYS = "errorgate.retention.days"
LEGAL_HOLD = "errorgate.legal_hold"

LOG_SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
SeverityName = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
_CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class RetentionConfig(ComponentConfig):
    policy: str | None = None
    catalog: str | None = None


# ---------------------------------------------------------------- policy file schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _utc(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_utc)]


class RetentionClass(_Strict):
    days: int = Field(ge=1, le=36500)
    description: str = ""


class Matcher(_Strict):
    service: list[str] | None = None
    severity: list[Literal["P1", "P2", "P3", "P4"]] | None = None
    kind: list[Literal["transient", "intermittent", "persistent", "cascading"]] | None = None
    category: list[str] | None = None
    domain: list[str] | None = None
    compliance: list[ComplianceScope] | None = None
    pii: bool | None = None
    error: bool | None = None
    min_log_severity: SeverityName | None = None
    max_log_severity: SeverityName | None = None
    attributes: dict[str, list[str | int | float | bool]] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Matcher:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("a matcher needs at least one condition")
        return self


class Rule(_Strict):
    name: str = ""
    class_: str = Field(alias="class")
    match: Matcher


class LegalHold(_Strict):
    id: str = Field(min_length=1)
    reason: str = ""
    match: Matcher
    start: UtcDatetime
    end: UtcDatetime | None = None
    class_: str | None = Field(default=None, alias="class")

    @model_validator(mode="after")
    def _window(self) -> LegalHold:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def active_at(self, ts: float) -> bool:
        return self.start.timestamp() <= ts and (self.end is None or ts < self.end.timestamp())


class RetentionPolicy(_Strict):
    default_class: str = "ops-30d"
    legal_hold_class: str = "audit-7y"
    classes: dict[str, RetentionClass] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    legal_holds: list[LegalHold] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> RetentionPolicy:
        for name in self.classes:
            if not _CLASS_NAME.match(name):
                raise ValueError(f"classes.{name}: class names are lowercase letters, digits and '-'")
        known = ", ".join(self.classes)
        for where, name in [
            ("default_class", self.default_class),
            ("legal_hold_class", self.legal_hold_class),
        ]:
            if name not in self.classes:
                raise ValueError(f"{where}: unknown class {name!r} (defined: {known})")
        for i, rule in enumerate(self.rules):
            if rule.class_ not in self.classes:
                raise ValueError(f"rules[{i}].class: unknown class {rule.class_!r} (defined: {known})")
        seen: set[str] = set()
        for i, hold in enumerate(self.legal_holds):
            if hold.class_ is not None and hold.class_ not in self.classes:
                raise ValueError(f"legal_holds[{i}].class: unknown class {hold.class_!r} (defined: {known})")
            if hold.id in seen:
                raise ValueError(f"legal_holds[{i}].id: duplicate hold id {hold.id!r}")
            seen.add(hold.id)
        return self


def load_policy(path: str | Path | None = None) -> RetentionPolicy:
    """Load and strictly validate a retention policy (``path`` or the bundled one)."""
    if path is None:
        text = resources.files("errorgate.governance").joinpath("retention.yaml").read_text(encoding="utf-8")
        source = "governance/retention.yaml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"retention policy {path}: cannot read: {e.strerror}") from None
        source = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with classes, rules, legal_holds")
    try:
        return RetentionPolicy.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            path_ = ".".join(str(p) for p in err["loc"])
            msg = (
                "unknown key"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{path_}: {msg}" if path_ else msg)
        raise ConfigError(f"{source}: {'; '.join(problems)}") from None


# ---------------------------------------------------------------- matching

_WANTED = (
    "errorgate.severity",
    "errorgate.error.kind",
    "errorgate.error.category",
    "errorgate.error.domain",
    "errorgate.error.fingerprint",
    "errorgate.redaction.count",
)


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
    ) -> None:
        self.service = service
        self.compliance = compliance
        self.attrs = attrs
        self.log_severity = log_severity
        self.timestamp = timestamp
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
        chosen = self.policy.default_class
        best = -1
        for rule in self.policy.rules:
            days = self._days[rule.class_]
            if days > best and matches(rule.match, item):
                chosen, best = rule.class_, days
        for hold in self.policy.legal_holds:
            if hold.active_at(item.timestamp) and matches(hold.match, item):
                hold_class = hold.class_ or self.policy.legal_hold_class
                if self._days[hold_class] >= self._days[chosen]:
                    chosen = hold_class
                return chosen, hold.id
        return chosen, None

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
                        item = _Item(service, scopes, span.attributes, None, error, ts)
                        self._tag(span.attributes, item, tally, holds)
        elif batch.signal is Signal.LOGS:
            logs = cast(ExportLogsServiceRequest, batch.request)
            for rl in logs.resource_logs:
                service, scopes = self._service(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9 or batch.received_at
                        sev = rec.severity_number
                        item = _Item(service, scopes, rec.attributes, sev, sev >= LOG_SEVERITIES["ERROR"], ts)
                        self._tag(rec.attributes, item, tally, holds)
        signal = batch.signal.value
        cap = self.context.telemetry.cap
        for name, n in tally.items():
            self._items.labels(signal, cap("class", name)).inc(n)
        for hold_id, n in holds.items():
            self._holds.labels(cap("hold", hold_id)).inc(n)
        return Output.of(batch)

    def _tag(self, attrs: Any, item: _Item, tally: Tally[str], holds: Tally[str]) -> None:
        name, hold = self.classify(item)
        attributes.set_value(attrs, CLASS, name)
        attributes.set_value(attrs, DAYS, self._days[name])
        if hold is not None:
            attributes.set_value(attrs, LEGAL_HOLD, hold)
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
