"""``encrypt``: field-level AEAD of configured attributes to ``enc:v2:<key-id>:<base64url>``.

Rules select attributes by service (glob on the resource's ``service.name``), attribute
key (glob; ``log.body`` selects log record bodies) and signal. The associated data binds
tenant (a resource attribute, ``tenant.id`` by default), service, signal and attribute key, so a
ciphertext copied into another field, tenant or service -- or decrypted with another service
claimed -- fails to decrypt. The tenant is read from
the telemetry itself, not from the connection, because whoever decrypts later only has
the exported telemetry to reconstruct it from.

Never encrypted, whatever the rules say: ``service.name`` and the tenant attribute (needed
to route and to decrypt) and ``errorgate.*`` (PII-free annotations other tools read).
Values already encrypted (``enc:v2:``/``enc:v1:`` prefix, e.g. by redact's ``encrypt`` action) are left
alone. Non-string values are encrypted as their JSON text. Within a matched attribute the
whole value (including nested maps and arrays) is encrypted as one unit.
"""

from __future__ import annotations

import base64
import json
import re
import weakref
from collections.abc import MutableSequence
from fnmatch import fnmatchcase
from typing import Any, Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from errorgate import attributes
from errorgate.component import Capabilities, ComponentConfig, ComponentContext, Factory, Output, Processor
from errorgate.extensions.keyring import KeyringConfig, KeyringExtension, open_keyring
from errorgate.governance.crypto import is_encrypted
from errorgate.governance.keyring import Keyring
from errorgate.signals import Batch

LOG_BODY_KEY = "log.body"
_ALL_SIGNALS: list[Literal["traces", "logs", "metrics"]] = ["traces", "logs", "metrics"]
_POINT_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
_MATCH_CACHE_LIMIT = 10_000


class EncryptRule(ComponentConfig):
    services: list[str] = Field(default_factory=lambda: ["*"], description="globs on service.name")
    keys: list[str] = Field(min_length=1, description="attribute key globs; 'log.body' selects log bodies")
    signals: list[Literal["traces", "logs", "metrics"]] = Field(default_factory=lambda: list(_ALL_SIGNALS))


def _default_rules() -> list[EncryptRule]:
    # End-user identity attributes (OpenTelemetry semantic conventions) are personal data
    # that investigators sometimes need back, so they are encrypted rather than masked.
    return [EncryptRule(keys=["enduser.*", "user.*"])]


class EncryptConfig(KeyringConfig):
    """The keyring keys (``keyring``, ``master_key_env``, ``master_key_file``) are the
    ``keyring`` extension's: they imply it when the file declares none."""

    tenant_attribute: str = "tenant.id"
    resource_attributes: bool = Field(default=True, description="also encrypt matching resource attributes")
    rules: list[EncryptRule] = Field(default_factory=_default_rules)

    def keyring_settings(self) -> KeyringConfig:
        """The keyring these settings describe (the ``keyring`` extension they imply)."""
        return KeyringConfig(
            keyring=self.keyring,
            master_key_env=self.master_key_env,
            master_key_file=self.master_key_file,
            kms=self.kms,
            audit=self.audit,
        )

    def implied_extensions(self) -> dict[str, ComponentConfig]:
        return {"keyring": self.keyring_settings()}

    def lineage(self) -> list[str]:
        """How this config treats fields, for ``errorgate lineage``."""
        lines = []
        for rule in self.rules:
            lines.append(
                f"encrypts keys {', '.join(rule.keys)} on services {', '.join(rule.services)} "
                f"({', '.join(rule.signals)}) to enc:v2 (AES-256-GCM-SIV, bound to tenant "
                f"'{self.tenant_attribute}', service, signal and key)"
            )
        return lines


class _KeyMatcher:
    """Does a rule select this attribute key? Memoised per key: keys are few and repeat."""

    __slots__ = ("patterns", "protected", "seen")

    def __init__(self, patterns: list[str], protected: set[str]) -> None:
        self.patterns = patterns
        self.protected = protected
        self.seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self.seen.get(key)
        if hit is None:
            hit = (
                key not in self.protected
                and not key.startswith("errorgate.")
                and any(fnmatchcase(key, p) for p in self.patterns)
            )
            if len(self.seen) < _MATCH_CACHE_LIMIT:
                self.seen[key] = hit
        return hit


Matcher = _KeyMatcher


class EncryptProcessor(Processor):
    # Keyring reads are lock-free snapshots; match caches tolerate races.
    capabilities = Capabilities(thread_safe=True)

    def __init__(self, config: EncryptConfig, keyring: Keyring, context: ComponentContext) -> None:
        self.config = config
        self.keyring = keyring
        self._protected = {"service.name", config.tenant_attribute}
        self._cap = context.telemetry.cap
        self._matchers: dict[tuple[str, str], Matcher] = {}
        self._encrypted = _counter(context)
        self._needles: dict[str, tuple[bytes, ...] | None] = {
            signal: _needles(config.rules, signal) for signal in _ALL_SIGNALS
        }

    # ------------------------------------------------------------------ matching

    def _matcher(self, signal: str, service: str) -> Matcher:
        matcher = self._matchers.get((signal, service))
        if matcher is not None:
            return matcher
        patterns = [
            key
            for rule in self.config.rules
            if signal in rule.signals and any(fnmatchcase(service, s) for s in rule.services)
            for key in rule.keys
        ]
        match = _KeyMatcher(patterns, self._protected)
        if len(self._matchers) >= _MATCH_CACHE_LIMIT:
            self._matchers.clear()
        self._matchers[(signal, service)] = match
        return match

    # ------------------------------------------------------------------ processing

    def process(self, batch: Batch) -> Output:
        signal = batch.signal.value
        request = batch.request
        needles = self._needles.get(signal)
        if needles is not None:
            # Walking every attribute in Python costs ~10x serialising the request in C; a
            # key a rule selects carries the rule's literal prefix, so a request holding none of
            # the prefixes has nothing to encrypt. (A prefix found elsewhere, e.g. in a value,
            # only costs the walk.)
            wire = request.SerializeToString()
            if not any(n in wire for n in needles):
                return Output.of(batch)
        per_service: dict[str, int] = {}
        if isinstance(request, ExportTraceServiceRequest):
            for rs in request.resource_spans:
                enc = self._for_resource(signal, rs.resource.attributes, per_service)
                n = self._resource(enc, rs.resource.attributes)
                for ss in rs.scope_spans:
                    n += enc.attrs(ss.scope.attributes)
                    for span in ss.spans:
                        n += enc.attrs(span.attributes)
                        for event in span.events:
                            n += enc.attrs(event.attributes)
                        for link in span.links:
                            n += enc.attrs(link.attributes)
                enc.done(n)
        elif isinstance(request, ExportLogsServiceRequest):
            for rl in request.resource_logs:
                enc = self._for_resource(signal, rl.resource.attributes, per_service)
                n = self._resource(enc, rl.resource.attributes)
                for sl in rl.scope_logs:
                    n += enc.attrs(sl.scope.attributes)
                    for record in sl.log_records:
                        n += enc.attrs(record.attributes)
                        if record.HasField("body"):
                            n += enc.value(LOG_BODY_KEY, record.body)
                enc.done(n)
        elif isinstance(request, ExportMetricsServiceRequest):
            for rm in request.resource_metrics:
                enc = self._for_resource(signal, rm.resource.attributes, per_service)
                n = self._resource(enc, rm.resource.attributes)
                for sm in rm.scope_metrics:
                    n += enc.attrs(sm.scope.attributes)
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        if kind in _POINT_KINDS:
                            for point in getattr(metric, kind).data_points:
                                n += enc.attrs(point.attributes)
                enc.done(n)
        for service, n in per_service.items():
            if n:
                self._encrypted.labels(signal, self._cap("service", service)).inc(n)
        return Output.of(batch)

    def _for_resource(
        self, signal: str, resource_attrs: MutableSequence[KeyValue], totals: dict[str, int]
    ) -> _Encryptor:
        service = attributes.get_str(resource_attrs, "service.name")
        matcher = self._matcher(signal, service)
        tenant = attributes.get_str(resource_attrs, self.config.tenant_attribute)
        return _Encryptor(self.keyring, matcher, signal, tenant, service, totals)

    def _resource(self, enc: _Encryptor, attrs: MutableSequence[KeyValue]) -> int:
        return enc.attrs(attrs) if self.config.resource_attributes else 0


def _needles(rules: list[EncryptRule], signal: str) -> tuple[bytes, ...] | None:
    """The literal prefixes (UTF-8) of the key globs that apply to ``signal``, any service; None
    when a glob starts with a wildcard (or selects log bodies), so no byte check can rule it out."""
    out: set[bytes] = set()
    for rule in rules:
        if signal not in rule.signals:
            continue
        for pattern in rule.keys:
            prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
            if not prefix or (signal == "logs" and fnmatchcase(LOG_BODY_KEY, pattern)):
                return None
            out.add(prefix.encode())
    return tuple(sorted(out))


class _Encryptor:
    """Encrypts matching values of one resource's items (one tenant, one service)."""

    __slots__ = ("keyring", "match", "service", "signal", "tenant", "totals")

    def __init__(
        self, keyring: Keyring, match: Matcher, signal: str, tenant: str, service: str, totals: dict[str, int]
    ) -> None:
        self.keyring = keyring
        self.match = match
        self.signal = signal
        self.tenant = tenant
        self.service = service
        self.totals = totals

    def attrs(self, attrs: MutableSequence[KeyValue]) -> int:
        # Memo lookup inline: this loop runs for every attribute of every item.
        n = 0
        seen = self.match.seen
        for kv in attrs:
            key = kv.key
            hit = seen.get(key)
            if hit is None:
                hit = self.match(key)
            if hit:
                n += self.value(key, kv.value, matched=True)
        return n

    def value(self, key: str, value: AnyValue, matched: bool = False) -> int:
        if not matched and not self.match(key):
            return 0
        kind = value.WhichOneof("value")
        if kind is None:
            return 0
        if kind == "string_value":
            if is_encrypted(value.string_value):
                return 0
            plaintext = value.string_value
        else:
            plaintext = json.dumps(
                _jsonable(attributes.to_python(value)), separators=(",", ":"), ensure_ascii=False
            )
        token = self.keyring.encrypt_field(
            plaintext, key=key, signal=self.signal, tenant=self.tenant, service=self.service
        )
        value.Clear()
        value.string_value = token
        return 1

    def done(self, n: int) -> None:
        self.totals[self.service] = self.totals.get(self.service, 0) + n


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _counter(context: ComponentContext) -> Counter:
    # One registry per gateway; several encrypt instances (encrypt/a, encrypt/b) share the series.
    registry = context.telemetry.registry
    counter = _COUNTERS.get(registry)
    if counter is None:
        counter = Counter(
            "errorgate_encrypted_values",
            "Attribute values and log bodies encrypted by the encrypt processor",
            ["signal", "service"],
            registry=registry,
        )
        _COUNTERS[registry] = counter
    return counter


def create_encrypt(config: EncryptConfig, context: ComponentContext) -> Processor:
    shared = context.extension(KeyringExtension)
    keyring = (
        shared.keyring
        if shared is not None
        else open_keyring(config.keyring_settings(), context.data_dir, context.logger)
    )
    return EncryptProcessor(config, keyring, context)


factory: Factory[EncryptConfig, Processor] = Factory(
    "encrypt", EncryptConfig, create_encrypt, EncryptProcessor
)
