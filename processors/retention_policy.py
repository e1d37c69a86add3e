"""The retention policy file (``governance/retention.yaml``): schema, strict validation, loading,
and how a rule's matcher matches one span or log record.

Documented with the ``retention`` processor (``processors/retention.py``), which applies it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from errorgate import attributes
from errorgate.config import ConfigError
from errorgate.governance.catalog import ComplianceScope
from errorgate.governance.yamlfile import load_model

LOG_SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
SeverityName = Literal["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
_CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


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
    policy, _, _ = load_model(path, "retention.yaml", RetentionPolicy, ConfigError, "retention policy")
    return policy


# ---------------------------------------------------------------- matching

# The item attributes matchers read; decoded only from items whose serialization holds one.
WANTED = (
    "errorgate.severity",
    "errorgate.error.kind",
    "errorgate.error.category",
    "errorgate.error.domain",
    "errorgate.error.fingerprint",
    "errorgate.redaction.count",
)


_WANTED_SET = frozenset(WANTED)
ANY_WANTED = re.compile(b"|".join(re.escape(k.encode()) for k in WANTED))
_NO_VALUES: dict[str, attributes.AttrValue] = {}


class Item:
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
        if serialized is not None and not ANY_WANTED.search(serialized):
            # No wanted key's text in the item: no attribute to decode (the common healthy item).
            self.error = error
            self.values = _NO_VALUES
            return
        # (A set: every attribute's key is looked up; an item tagged by classify has a dozen.)
        found = {kv.key: kv.value for kv in attrs if kv.key in _WANTED_SET}
        self.error = error or "errorgate.error.fingerprint" in found
        self.values = {k: attributes.to_python(v) for k, v in found.items()}


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def matches(m: Matcher, item: Item) -> bool:
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
