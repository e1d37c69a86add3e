"""``classify``: error detection, grouping, taxonomy, kind, cascade, severity and error metrics.

README (config keys and defaults)::

    processors:
      classify:
        catalog: null            # service catalog path; null = bundled governance/services.yaml
                                 # (a catalog the gateway shares as service "catalog" wins)
        taxonomy: null           # taxonomy path; null = bundled governance/taxonomy.yaml
        stack_frames: 5          # innermost in-app frames (module:function) in the fingerprint
        baggage: []              # W3C baggage keys copied onto items, e.g. [tenant.id]
        retry_attributes: [http.request.resend_count, retry.attempt, retry.count]
        max_services: 1000       # services with burn-rate windows (least recently seen evicted)
        max_correlated_spans: 50000  # failing spans remembered so log errors join their trace's cascade
        episodes:
          bucket: 1m
          persistent_min_buckets: 5
          quiet_period: 30m      # a new episode this soon after the last one is a recurrence
          flap_window: 21        # buckets; Nagios flap detection
          flap_start: 0.5
          flap_end: 0.25
          reopen_window: 24h
          reopen_count: 2
          deterministic_min_occurrences: 3
          max_states: 10000      # (service, fingerprint) states kept, LRU
        incidents: {window: 2m, min_services: 3, min_errors: 3}
        severity:
          min_requests: 10       # a window with fewer requests does not burn
          rules:                 # first rule firing wins, else P4
            - {severity: P1, burn_rate: 14.4, long_window: 1h, short_window: 5m, max_tier: 1}
            - {severity: P2, burn_rate: 14.4, long_window: 1h, short_window: 5m}
            - {severity: P2, burn_rate: 6, long_window: 6h, short_window: 30m, max_tier: 2}
            - {severity: P3, burn_rate: 6, long_window: 6h, short_window: 30m}
            - {severity: P3, burn_rate: 1, long_window: 3d, short_window: 6h, urgency: 2-medium}
        metrics:
          label_caps: {service: 200, component: 200, domain: 20, kind: 10, severity: 10,
                       category: 50, version: 500, origin_service: 200, team: 50, tier: 10}
        deploys:                 # per-(service, version) windows: verdicts and routing health
          slot: 10s              # window resolution
          retention: 1h          # longest window kept (verdict and health windows fit in it)
          version_ttl: 6h        # a version not seen this long (telemetry time) ages out, with
                                 # its errorgate_*_by_version series and its version label value
          max_versions: 2000     # hard bound, least recently seen out first
          max_fingerprints: 500  # error groups remembered per version
          persist_interval: 30s  # slots written to <data_dir>/state/<id>/deploys.json (and at
                                 # shutdown) so a restart keeps a running canary; 0s: memory only
          verdict: {window: 10m, min_requests: 500, alpha: 0.01, max_failure_increase: 0.01,
                    new_fingerprint_min_count: 3, max_latency_increase: 0.25, latency_min_difference: 10ms,
                    latency_min_slots: 5, latency_slot_min_samples: 10}   # latency: Mann-Whitney U on slot p95s
          health: {short_window: 5m, long_window: 1h, fail_burn_rate: 14.4, warn_burn_rate: 6,
                   min_requests: 10, kind_window: 5m, kind_min_burn: 1, recover_after: 30s}
          rollback:              # a failing newest version -> actions, once per (service, version)
            enabled: false
            dry_run: false       # log and audit what would be sent; send nothing
            check_interval: 30s  # newest version vs the one before, per service
            cooldown: 30m        # per service, after a rollback fired (shared in etcd with ha:)
            services: []         # empty: every service
            asked_verdicts: true # a fail answered over /api/v1/verdict (Argo, Flagger) counts too
            actions:             # kinds: webhook, github, gitlab, argo_rollouts (deploys/actions.py)
              - {kind: github, repository: acme/checkout, workflow: rollback.yml, ref: main}
            grafana: {url: http://grafana:3000, dashboard_uid: null, tags: [errorgate, rollback]}
            incidents: {url: http://127.0.0.1:9466, token_env: ERRORGATE_INCIDENTS_TOKEN}   # timeline note

Label caps are the cost/granularity trade-off: past a label's cap new values read ``_other``.

Requests (``errorgate_requests_total`` and burn-rate denominators) are SERVER and CONSUMER
spans plus root spans of any kind; a request failed when that span is an error. Log records
are not requests; log errors take severity from their service's burn state. Healthy items get
no error attributes. Windows run on the telemetry's timestamps (span end, log time, else
observed time), so replays classify like live traffic. An item's kind is the best belief at
the moment it passes: a persistent failure starts as ``transient`` until the evidence exists.

Attributes beyond CONVENTIONS: ``errorgate.error.component`` (failing component),
``errorgate.itil.impact`` / ``errorgate.itil.urgency`` (``1-high`` … ``3-low``),
``errorgate.itil.priority`` (``1-critical`` … ``5-planning``), ``errorgate.incident.id``.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from operator import itemgetter
from typing import NamedTuple

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import AttrValue, set_value, to_dict
from errorgate.caches import MIB, ByteFifoMap, ByteLRU
from errorgate.component import (
    Capabilities,
    ComponentContext,
    Factory,
    HttpAnswer,
    HttpQuery,
    Output,
    Processor,
)
from errorgate.config import ConfigError
from errorgate.extensions.catalog import shared_catalog
from errorgate.governance.catalog import CatalogError, load_catalog
from errorgate.processors.classification import cascade, scan, spans
from errorgate.processors.classification.detect import SEVERITY_ERROR, ErrorInfo, detect_log
from errorgate.processors.classification.episodes import EpisodeParams, EpisodeTracker, Observation
from errorgate.processors.classification.grouping import Grouping
from errorgate.processors.classification.incidents import IncidentTracker
from errorgate.processors.classification.metrics import ErrorMetrics
from errorgate.processors.classification.settings import ClassifyConfig
from errorgate.processors.classification.severity import Assessment, BurnRates, BurnRule
from errorgate.processors.classification.tags import LOG_ATTRIBUTES, SPAN_ATTRIBUTES, Tag, TagWriter
from errorgate.processors.classification.taxonomy import Category, TaxonomyError, load_taxonomy
from errorgate.processors.classification.template import parameterize
from errorgate.processors.deploys import persist
from errorgate.processors.deploys.rollback import build_trigger
from errorgate.processors.deploys.routes import ROUTES, DeployRoutes
from errorgate.processors.deploys.store import VersionStore
from errorgate.processors.errorstate import (
    BurnInput,
    LocalErrorState,
    RedisIncidents,
    SharedCall,
    error_state,
    shared_incidents,
)
from errorgate.signals import ERROR_TRACES_NOTE, WIRE_NOTE, Batch, Signal
from errorgate.telemetry import LabelCap

_NONE: frozenset[str] = frozenset()
_NO_IDS: frozenset[bytes] = frozenset()
# Fields of a ``spans.Record``.
_SERVICE, _PEER, _END = itemgetter(2), itemgetter(6), itemgetter(7)
_RESOURCE_CACHE = 4096
# Byte budgets (errorgate.caches) of classify's caches, beside their entry counts. Resources are
# cached by their serialized bytes (a few hundred usually; attribute values up to 64 KiB each
# made 4,096 of them unbounded in practice); 4,096 typical ones take about 2 MiB.
_RESOURCE_BYTES = 4 * MIB
_SERVICE_SETS_BYTES = 2 * MIB
# Failing spans remembered for log correlation: ~370 bytes each measured (two ids, a role and
# the origin service; charged 480 + names), so the default 50,000 take ~18 MiB and are charged
# ~25 MiB: the budget binds only on long service names or incident ids.
_CORRELATED_BYTES = 32 * MIB
_RESOURCE_ENTRY = 260  # measured: dict slot + (service, version) tuple + queue slot, with churn
_SERVICE_SET_ENTRY = 420  # measured: dict slot + (service, peer) key tuple + frozenset
_CORRELATED_ENTRY = 480  # measured: OrderedDict slot + key tuple of two ids + value tuple, with churn


def _resource_cost(key: bytes, value: tuple[str, str]) -> int:
    return len(key) + len(value[0]) + len(value[1]) + _RESOURCE_ENTRY


def _service_set_cost(key: tuple[str, str], value: frozenset[str]) -> int:
    return 2 * (len(key[0]) + len(key[1])) + _SERVICE_SET_ENTRY  # the names in the key and the set


def _correlated_cost(key: tuple[bytes, bytes], value: tuple[str, str, str]) -> int:
    return len(key[0]) + len(key[1]) + len(value[1]) + len(value[2]) + _CORRELATED_ENTRY


class _Failing(NamedTuple):
    """A failing item grouped, waiting for its batch's state (episodes, burn) to settle it."""

    item: Span | LogRecord
    attrs: dict[str, AttrValue]
    service: str
    version: str
    ts: float
    span_kind: int | None
    role: cascade.Role | None
    retried: str | None
    template: str
    category: Category
    fp: str
    domain: str
    component: str


def apply_label_caps(config: ClassifyConfig, cap: LabelCap) -> None:
    """Gateway-wide caps (service.telemetry.metrics.label_caps) win over classify's defaults;
    caps set in classify's config win over both."""
    for label, value in config.gateway_label_caps(cap.caps()).items():
        cap.set_cap(label, value)


class Classify(Processor):
    signals = frozenset({Signal.TRACES, Signal.LOGS})
    capabilities = Capabilities(
        # Cascade origins need whole traces.
        needs_whole_traces=True,
        # First in a pipeline, classify is handed the request as the pipeline serialized it anyway
        # (to dead-letter the batch as received should a processor fail; cheaper than a copy): one
        # C-level scan of it can rule out exception attributes in every log record at once.
        reads_wire_note=True,
        # The template replaces what patterns find; a personal name in a message needs redact's NER.
        writes_free_text=frozenset({"errorgate.error.template"}),
        # Deploy verdicts and routing health from the per-version state (errorgate.processors.deploys).
        http_routes=ROUTES,
    )

    def __init__(self, config: ClassifyConfig, context: ComponentContext) -> None:
        self.config = config
        prefix = f"processors.{context.component_id}"
        shared = shared_catalog(context, config.catalog)
        try:
            self.catalog = shared if shared is not None else load_catalog(config.catalog)
        except CatalogError as e:
            raise ConfigError(f"{prefix}.catalog: {e}") from None
        try:
            self.taxonomy = load_taxonomy(config.taxonomy)
        except TaxonomyError as e:
            raise ConfigError(f"{prefix}.taxonomy: {e}") from None
        ep = config.episodes
        self.episodes = EpisodeTracker(
            EpisodeParams(
                bucket_seconds=ep.bucket,
                persistent_min_buckets=ep.persistent_min_buckets,
                quiet_buckets=int(ep.quiet_period // ep.bucket),
                flap_window=ep.flap_window,
                flap_start=ep.flap_start,
                flap_end=ep.flap_end,
                reopen_window_buckets=int(ep.reopen_window // ep.bucket),
                reopen_count=ep.reopen_count,
                deterministic_min_occurrences=ep.deterministic_min_occurrences,
                max_states=ep.max_states,
            )
        )
        inc = config.incidents
        self.incidents = IncidentTracker(
            inc.window, inc.min_services, inc.min_errors, max_components=config.max_services
        )
        self.burn = BurnRates(
            tuple(BurnRule(**r.model_dump()) for r in config.severity.rules),
            min_requests=config.severity.min_requests,
            max_services=config.max_services,
        )
        # Episodes and burn windows in this process, or shared by replicas (the redis extension).
        self.state = error_state(context, LocalErrorState(self.episodes, self.burn))
        # Incident candidates counted over all replicas, with the redis extension (else None).
        self.shared_incidents = shared_incidents(context, self.incidents)
        self._burn_view: BurnRates = self.burn  # the burn rates of the batch being classified
        # Gateway-wide caps (service.telemetry.metrics.label_caps) win over these defaults;
        # caps set here explicitly win over both.
        apply_label_caps(config, context.telemetry.cap)
        self.metrics = ErrorMetrics(context.telemetry.registry, context.telemetry.cap)
        self.metrics.describe_catalog(self.catalog)
        # Per-(service, version) windows that age out; the version label follows them out.
        self.deploys = VersionStore(config.deploys, on_expire=self._version_gone)
        # ...kept on disk too, so a restarted worker goes on with a running canary (deploys/persist.py).
        self._deploys_file = (
            context.state_dir() / persist.FILE_NAME if config.deploys.persist_interval else None
        )
        self._next_save = 0.0
        self._log = context.logger
        if self._deploys_file is not None:
            persist.load(self.deploys, self._deploys_file, context.logger)
        # Rollback of a failing newest version (off unless deploys.rollback.enabled).
        self.rollback = build_trigger(config.deploys.rollback, context)
        self.deploy_routes = DeployRoutes(config.deploys, self.deploys, lambda s: self.catalog.lookup(s).slo)
        if self.rollback is not None:
            self.deploy_routes.on_verdict = self.rollback.asked
        # (trace id, span id) of failing spans -> (role, origin service, incident id) for log correlation.
        self._correlated: ByteLRU[tuple[bytes, bytes], tuple[str, str, str]] = ByteLRU(
            config.max_correlated_spans, _CORRELATED_BYTES, _correlated_cost
        )
        self._resources: ByteFifoMap[bytes, tuple[str, str]] = ByteFifoMap(
            _RESOURCE_CACHE, _RESOURCE_BYTES, _resource_cost
        )
        self._span_bytes = scan.SpanBytes()
        self._tags = TagWriter()
        self._nodes = spans.NodeBuilder(config.retry_attributes)
        self._grouping = Grouping(self.taxonomy, config.stack_frames)
        self._service_sets: ByteFifoMap[tuple[str, str], frozenset[str]] = ByteFifoMap(
            _RESOURCE_CACHE, _SERVICE_SETS_BYTES, _service_set_cost
        )
        self._assessments: dict[tuple[str, int, float, bool], Assessment] = {}

    # ------------------------------------------------------------------ pipeline entry points

    def process(self, batch: Batch) -> Output:
        self._assessments.clear()
        wire = batch.notes.pop(WIRE_NOTE, None)  # void once tags change the request
        try:
            if batch.signal is Signal.TRACES:
                items = self._traces(batch, wire if isinstance(wire, bytes) else None)
            elif batch.signal is Signal.LOGS:
                items = self._logs(batch, wire if isinstance(wire, bytes) else None)
            else:
                return Output.of(batch)
        finally:
            self.metrics.flush()
        # ``Output.of`` without counting the items again (classify never removes any).
        return Output(batches=[batch]) if items else Output()

    def _traces(self, batch: Batch, wire: bytes | None) -> int:
        """Classify a batch of spans (``wire``: the request serialized, if the stage before did);
        returns how many spans it holds. Leaves ``ERROR_TRACES_NOTE`` on the batch: the ids of
        traces with a span that has status ERROR or a fingerprint (classify fingerprints every
        failing span it finds, and status ERROR always fails; upstream fingerprints are found in
        the request's bytes), so later stages (``sample``) need not search the spans again."""
        late = batch.notes.get("late") is True
        received = batch.received_at
        copy = self._copy_baggage if self.config.baggage else None  # baggage reads every attribute
        durations: dict[tuple[str, str, int], list[float]] = {}
        errors, traces, requests, n_spans = spans.scan(
            batch.request,  # type: ignore[arg-type]
            received,
            late,
            self._resource,
            copy,
            self._span_bytes,
            durations,
            wire,
        )
        # The request's bytes before any tag, for the search of upstream fingerprints below.
        data = wire if wire is not None else batch.request.SerializeToString()
        records = self._record_requests(requests, durations)
        analyses: dict[bytes, cascade.TraceAnalysis] = {}
        failing = {r[0].trace_id for r in errors} if errors and traces else _NO_IDS
        observe = self.incidents.observe
        for trace_id, group in traces.items():
            if trace_id not in failing:  # healthy traces only count what they touched
                if len(group) == 1:
                    only = group[0]
                    observe(only[7] / 1e9 or received, self._services(only[2], only[6]), _NONE, _NONE)
                else:
                    # Services and peers, read in C (``map``/``itemgetter``); a service is never
                    # "" (``scan.service_of``), so dropping "" drops exactly the missing peers.
                    touched = set(map(_SERVICE, group))
                    touched.update(map(_PEER, group))
                    touched.discard("")
                    observe(max(map(_END, group)) / 1e9 or received, frozenset(touched), _NONE, _NONE)
                continue
            ts = max(map(_END, group)) / 1e9 or received
            analysis = analyses[trace_id] = cascade.analyse_trace([self._nodes(r) for r in group])
            observe(ts, analysis.services, analysis.failing_services, analysis.origin_services)
            for service, outcome in analysis.retried_operations:
                self.metrics.retried(service, outcome)
        pending: list[_Failing] = []
        for span, attrs, service, version, error, ts, *_ in errors:
            assert attrs is not None and error is not None  # an error was found by decoding them
            found = analyses.get(span.trace_id)
            role = found.roles.get(span.span_id) if found else None
            retried = found.retried.get(span.span_id) if found else None
            route = str(attrs.get("http.route") or span.name)
            pending.append(
                self._group(span, attrs, error, service, version, ts, span.kind, route, role, retried)
            )
        # The batch's requests, failing items and incident counts go to the state at once (one
        # round trip when shared); incidents are then judged, before the failing items are settled.
        window = self.shared_incidents.call() if self.shared_incidents is not None and traces else None
        observed = self._observe(records, pending, (window,) if window is not None else ())
        if traces:
            change = self.incidents.evaluate(RedisIncidents.read(window) if window is not None else None)
            for incident in change.opened:
                self.metrics.incident_opened(incident.origin_service)
            for incident in change.closed:
                for service in incident.services:
                    self.metrics.incident_member(service, False)
        for f, seen in zip(pending, observed, strict=True):
            self._settle(f, seen)
            role = f.role
            if self.config.max_correlated_spans and role is not None:
                item = f.item  # a span: the traces path groups only spans
                incident_id = str(f.attrs.get("errorgate.incident.id") or "")
                self._remember((item.trace_id, item.span_id), (role.role, role.origin_service, incident_id))
        failed = frozenset([r[0].trace_id for r in errors])
        upstream = scan.fingerprinted_traces(batch.request, data, failed)  # type: ignore[arg-type]
        batch.notes[ERROR_TRACES_NOTE] = failed | upstream if upstream else failed
        return n_spans

    def _record_requests(
        self,
        requests: dict[tuple[str, str, int], list[int]],
        durations: dict[tuple[str, str, int], list[float]],
    ) -> list[BurnInput]:
        """Count the batch's requests per (service, version, second): metrics and per-version
        deploy state now; the burn-rate inputs returned, for the state's one call per batch."""
        records: list[BurnInput] = []
        for (service, version, second), (n_requests, n_failed) in requests.items():
            self.metrics.request(service, version, n_requests, n_failed)
            records.append((service, float(second), n_requests, n_failed))
            if version:
                key = (service, version, second)
                self.deploys.record_requests(
                    service, version, second, n_requests, n_failed, durations.get(key, ())
                )
        return records

    def _services(self, service: str, peer: str) -> frozenset[str]:
        """The services a one-span trace touched (the same few sets repeat: cached, bounded)."""
        found = self._service_sets.get((service, peer))
        if found is None:
            found = frozenset((service, peer) if peer else (service,))
            self._service_sets.put((service, peer), found)
        return found

    def _resource(self, resource: Resource) -> tuple[str, str]:
        """(service, version) of a resource, cached by its bytes (the same few resources repeat)."""
        key = resource.SerializeToString()
        found = self._resources.get(key)
        if found is None:
            found = scan.service_of(to_dict(resource.attributes))
            self._resources.put(key, found)
        return found

    def _logs(self, batch: Batch, wire: bytes | None) -> int:
        """Classify a batch of log records (``wire``: the request serialized, if the pipeline
        did); returns how many records it holds."""
        full = bool(self.config.baggage)
        anywhere = wire is None or wire.find(b"exception.") >= 0
        n_records = 0
        failing: list[_Failing] = []
        for rl in batch.request.resource_logs:  # type: ignore[union-attr]
            service, version = self._resource(rl.resource)
            for sl in rl.scope_logs:
                records = sl.log_records
                n_records += len(records)
                # No "exception." text in the whole scope: no record has exception attributes,
                # so only the severity can make one fail (one C-level scan instead of one per record).
                exceptions = full or (anywhere and sl.SerializeToString().find(b"exception.") >= 0)
                for record in records:
                    severity = record.severity_number
                    if (
                        not full
                        and severity != 0
                        and severity < SEVERITY_ERROR
                        and not (exceptions and record.SerializeToString().find(b"exception.") >= 0)
                    ):
                        continue  # below ERROR and no exception attributes: detect_log finds nothing
                    attrs = to_dict(record.attributes)
                    self._copy_baggage(record.attributes, attrs, rl.resource.attributes)
                    error = detect_log(record, attrs)
                    if error is None:
                        continue
                    ts = scan.seconds(
                        record.time_unix_nano, record.observed_time_unix_nano, fallback=batch.received_at
                    )
                    route = str(attrs.get("code.function.name") or attrs.get("code.function") or "")
                    role = None
                    linked = (
                        self._correlated.peek((record.trace_id, record.span_id)) if record.trace_id else None
                    )
                    if linked is not None:
                        role = cascade.Role(linked[0], linked[1], b"")
                    failing.append(
                        self._group(record, attrs, error, service, version, ts, None, route, role, None)
                    )
        if failing:
            for f, seen in zip(failing, self._observe([], failing), strict=True):
                self._settle(f, seen)
        return n_records

    # ------------------------------------------------------------------ one failing item

    def _group(
        self,
        item: Span | LogRecord,
        attrs: dict[str, AttrValue],
        error: ErrorInfo,
        service: str,
        version: str,
        ts: float,
        span_kind: int | None,
        route: str,
        role: cascade.Role | None,
        retried: str | None,
    ) -> _Failing:
        """One failing item grouped: the message's template, taxonomy category, fingerprint,
        domain, failing component."""
        template = parameterize(error.message)
        category, fp, domain, component = self._grouping(error, template, attrs, service, span_kind, route)
        return _Failing(
            item,
            attrs,
            service,
            version,
            ts,
            span_kind,
            role,
            retried,
            template,
            category,
            fp,
            domain,
            component,
        )

    def _observe(
        self, records: list[BurnInput], failing: list[_Failing], also: tuple[SharedCall, ...] = ()
    ) -> list[Observation]:
        """The batch's requests and failing items handed to the state at once (``also``: calls
        riding the same round trip); each item's episode observation, in order (the burn rates
        to assess them by: ``_burn_view``)."""
        observations = [
            (f.service, f.fp, f.ts, f.category.deterministic, f.retried == "failed") for f in failing
        ]
        seen, self._burn_view = self.state.classify(records, observations, {f.service for f in failing}, also)
        return seen

    def _settle(self, f: _Failing, seen: Observation) -> None:
        """One failing item, observed: settle its kind and severity, tag it, count it."""
        (
            item,
            attrs,
            service,
            version,
            ts,
            span_kind,
            role,
            retried,
            template,
            category,
            fp,
            domain,
            component,
        ) = f
        # Kind: the episode's, unless the trace knows better (a retry that succeeded shows a
        # transient failure; a failure propagated from another service is part of a cascade).
        kind = seen.kind
        if retried == "succeeded":
            kind = "transient"
        if role is not None and role.role == "propagated":
            kind = "cascading"
        # Severity: the service's burn rates; an active incident of the origin service raises the impact.
        incident = self.incidents.incident_for(role.origin_service) if role is not None else None
        assessment = self._assessment(service, incident is not None)
        # Cascade role: spans only (a log record joins its trace's cascade but is none of its spans).
        if role is not None and role.role in ("origin", "propagated") and span_kind is not None:
            self.metrics.cascade_error(service, role.origin_service, role.role)
        # Tag.
        incident_id = incident.id if incident is not None else None
        tags = self._error_tags(
            fp,
            template,
            kind,
            domain,
            component,
            category.name,
            category.itil,
            assessment,
            role,
            service,
            incident_id,
        )
        field_tag = LOG_ATTRIBUTES if isinstance(item, LogRecord) else SPAN_ATTRIBUTES
        self._tags.write(item, field_tag, item.attributes, attrs, tags)
        if incident_id is not None:
            # Only after ``write``, which reads the keys in ``attrs`` as attributes the item has.
            attrs["errorgate.incident.id"] = incident_id
        # Count.
        if incident_id is not None:
            self.metrics.incident_member(service, True)
        if version:
            origin = role.origin_service if role is not None and role.role == "propagated" else ""
            self.deploys.record_error(service, version, fp, ts, kind, origin)
        if seen.new_fingerprint:
            self.metrics.new_fingerprint(service)
        if seen.new_episode:
            self.metrics.episode(service, kind)
        labels = {
            "service": service,
            "component": component,
            "domain": domain,
            "kind": kind,
            "severity": assessment.severity,
            "category": category.name,
        }
        self.metrics.error(labels, version)
        self.metrics.error_at(service, f.ts)

    def _assessment(self, service: str, in_incident: bool) -> Assessment:
        """The service's severity, impact and urgency now (its catalog entry exported on first sight)."""
        entry = self.catalog.lookup(service)
        self.metrics.describe_service(service, entry)
        # Burn windows only change between batches (``record`` runs before any item is classified).
        akey = (service, entry.tier, entry.slo, in_incident)
        assessment = self._assessments.get(akey)
        if assessment is None:
            assessment = self._assessments[akey] = self._burn_view.assess(
                service, entry.tier, entry.slo, in_incident=in_incident
            )
        return assessment

    @staticmethod
    def _error_tags(
        fp: str,
        template: str,
        kind: str,
        domain: str,
        component: str,
        category: str,
        itil_category: str,
        assessment: Assessment,
        role: cascade.Role | None,
        service: str,
        incident_id: str | None,
    ) -> tuple[Tag, ...]:
        """The tags of a failing item, in the order they are written."""
        tags: list[Tag] = [("errorgate.error.fingerprint", fp)]
        if template:
            tags.append(("errorgate.error.template", template))
        tags += [
            ("errorgate.error.kind", kind),
            ("errorgate.error.domain", domain),
            ("errorgate.error.component", component),
            ("errorgate.error.category", category),
            ("errorgate.itil.category", itil_category),
            ("errorgate.severity", assessment.severity),
            ("errorgate.itil.impact", assessment.impact),
            ("errorgate.itil.urgency", assessment.urgency),
            ("errorgate.itil.priority", assessment.priority),
        ]
        if role is not None:
            if role.role == "origin":
                tags.append(("errorgate.error.origin", True))
            if role.origin_service != service:
                tags.append(("errorgate.error.origin_service", role.origin_service))
        if incident_id is not None:
            tags.append(("errorgate.incident.id", incident_id))
        return tuple(tags)

    # ------------------------------------------------------------------ deploys

    def answer(self, query: HttpQuery) -> HttpAnswer:
        return self.deploy_routes.answer(query)

    def start(self) -> None:
        if self.rollback is not None:
            self.rollback.start()

    def poll(self, now: float) -> Output:
        # Judged here (the state is read under the pipeline lock), acted on in the trigger's thread.
        if self.rollback is not None and self.rollback.due(now):
            self.rollback.submit(self.rollback.failing(self.deploys, self.config.deploys.verdict))
        if self._deploys_file is not None and now >= self._next_save:
            self._next_save = now + self.config.deploys.persist_interval
            self._save_deploys()
        return Output()

    def shutdown(self) -> None:
        if self.rollback is not None:
            self.rollback.stop()
        if self._deploys_file is not None:
            self._save_deploys()

    def _save_deploys(self) -> None:
        assert self._deploys_file is not None
        try:
            persist.save(self.deploys, self._deploys_file)
        except OSError as e:  # a full disk must not stop the pipeline: the state is a convenience
            self._log.warning("deploy state %s not written: %s", self._deploys_file, e.strerror)

    def _version_gone(self, service: str, version: str) -> None:
        """A version aged out of the deploy windows: its metric label values go too."""
        self.metrics.forget_version(service, version, still_used=self.deploys.in_use(version))

    # ------------------------------------------------------------------ helpers

    def _remember(self, key: tuple[bytes, bytes], value: tuple[str, str, str]) -> None:
        self._correlated.put(key, value)  # most recent last; oldest out past either bound

    def _copy_baggage(
        self,
        target: MutableSequence[KeyValue],
        attrs: dict[str, AttrValue],
        resource: MutableSequence[KeyValue],
    ) -> None:
        """Copy configured W3C baggage entries (from a captured ``baggage`` header) onto the item."""
        if not self.config.baggage:
            return
        entries = scan.baggage_entries(attrs, to_dict(resource))
        for key in self.config.baggage:
            if key in entries and key not in attrs:
                set_value(target, key, entries[key])
                attrs[key] = entries[key]


def create_classify(config: ClassifyConfig, context: ComponentContext) -> Processor:
    return Classify(config, context)


factory: Factory[ClassifyConfig, Processor] = Factory("classify", ClassifyConfig, create_classify, Classify)
