"""``sample``: error-aware tail sampling with correct statistics.

Config (all optional; defaults shown)::

    sample:
      decision_wait: 10s          # trace assembly window (read by the assembler in front of classify/sample)
      num_traces: 50000           # traces held at once; past it the oldest is released early (never dropped)
      max_spans_per_trace: 10000  # a giant trace is released early so it cannot starve others
      max_bytes_per_trace: 4194304
      max_total_mib: 256          # bytes held over all traces
      late_cache_size: 100000     # released trace ids remembered, so late spans are marked late
      healthy_keep_probability: 0.1
      latency_threshold: 2s       # traces lasting at least this long are kept (0 disables)
      attribute_rules:            # keep traces where any span (or its resource) matches
        - {key: http.route, values: [/checkout]}
        - {key: enduser.id, pattern: "^vip-"}
      flood: {first_n_per_minute: 10, rate_per_second_after: 1, max_fingerprints: 10000}
      logs: {per_service_probability: {batch-reports: 0.05}, default_probability: 1.0}
      decision_cache_size: 100000 # trace decisions remembered for late spans and logs

Decisions, per whole trace (the assembler hands over complete traces):
- ``error``: any span has status ERROR or an ``errorgate.error.fingerprint`` (set by classify; if
  absent the fingerprint is service + status message). Error floods are thinned per fingerprint:
  the first N traces per minute are kept, then a token bucket (reason ``flood``); a dropped trace's
  count is carried onto the next kept one of its fingerprint, so adjusted counts still add up.
- ``latency``: trace duration (earliest start to latest end) >= ``latency_threshold``.
- ``rule``: an attribute rule matches.
- ``probability``: otherwise kept when the trace id's randomness passes the threshold for
  ``healthy_keep_probability`` (W3C ``ot=th``, consistent across replicas); ``th`` is raised,
  never lowered.
Every kept span and log record carries ``errorgate.sampling.adjusted_count`` (1/p; 1 when not
thinned, times any upstream sampler's factor). Late spans follow the cached decision for their
trace (``follow_trace``), except that an error arriving for a dropped trace is decided afresh.

Logs: severity >= ERROR always kept (``severity``) and marks its trace to be kept; lower
severities follow their trace's cached decision, or, before the trace is decided, the same
consistent trace-id test healthy traces use; records without a trace id are kept with their
service's probability (``logs.per_service_probability``, else ``logs.default_probability``).

Metrics: ``errorgate_sampled_items_total{signal,decision,reason}``,
``errorgate_sampling_adjusted_items_total{signal}``; drops are reported as ``Output.dropped["sampled"]``.
"""

from __future__ import annotations

import random
import re
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import Counter
from pydantic import Field, model_validator

from errorgate import attributes
from errorgate.assembly import AssemblyConfig, get_or_create, valid_trace_id
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor, register_processor
from errorgate.config import Duration
from errorgate.processors.sampling import consistent
from errorgate.processors.sampling.flood import FloodLimiter
from errorgate.processors.sampling.traces import Trace, primary_fingerprint
from errorgate.signals import Batch, Signal, prune_empty

ADJUSTED_COUNT = "errorgate.sampling.adjusted_count"
SEVERITY_ERROR = 17  # OTLP SeverityNumber ERROR


class AttributeRule(ComponentConfig):
    key: str = Field(min_length=1)
    values: list[str | int | float | bool] | None = None
    pattern: str | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> AttributeRule:
        if (self.values is None) == (self.pattern is None):
            raise ValueError("give exactly one of values or pattern")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"pattern is not a valid regular expression: {e}") from None
        return self


class FloodConfig(ComponentConfig):
    first_n_per_minute: int = Field(default=10, ge=1)
    rate_per_second_after: float = Field(default=1.0, ge=0)
    max_fingerprints: int = Field(default=10_000, ge=1)


class LogSamplingConfig(ComponentConfig):
    per_service_probability: dict[str, float] = Field(default_factory=dict)
    default_probability: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _probabilities(self) -> LogSamplingConfig:
        for service, p in self.per_service_probability.items():
            if not 0 <= p <= 1:
                raise ValueError(f"per_service_probability.{service}: must be between 0 and 1")
        return self


class SampleConfig(AssemblyConfig):
    healthy_keep_probability: float = Field(default=0.1, ge=0, le=1)
    latency_threshold: Duration = 2.0
    attribute_rules: list[AttributeRule] = Field(default_factory=list)
    flood: FloodConfig = Field(default_factory=FloodConfig)
    logs: LogSamplingConfig = Field(default_factory=LogSamplingConfig)
    decision_cache_size: int = Field(default=100_000, ge=1)


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    reason: str
    adjusted: float = 1.0
    threshold: int | None = None  # th to raise tracestate to (probability decisions only)


class SampleProcessor(Processor):
    signals = frozenset({Signal.TRACES, Signal.LOGS})

    def __init__(
        self, config: SampleConfig, context: ComponentContext, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.context = context
        self._rng = rng or random.Random()
        self._threshold = consistent.threshold_for(config.healthy_keep_probability)
        adjusted = consistent.adjusted_count(min(self._threshold, consistent.MAX_THRESHOLD - 1))
        self._by_probability = {
            keep: Decision(keep, "probability", adjusted, self._threshold or None) for keep in (False, True)
        }
        self._flood = FloodLimiter(
            config.flood.first_n_per_minute, config.flood.rate_per_second_after, config.flood.max_fingerprints
        )
        self._decisions: OrderedDict[bytes, Decision] = OrderedDict()
        self._error_logged: OrderedDict[bytes, None] = OrderedDict()  # traces an ERROR log marked for keeping
        self._rules = [_compile(rule) for rule in config.attribute_rules]
        registry = context.telemetry.registry
        self._items: Counter = get_or_create(
            registry,
            "errorgate_sampled_items",
            lambda: Counter(
                "errorgate_sampled_items",
                "Spans and log records by sampling decision and reason",
                ["signal", "decision", "reason"],
                registry=registry,
            ),
        )
        self._adjusted: Counter = get_or_create(
            registry,
            "errorgate_sampling_adjusted_items",
            lambda: Counter(
                "errorgate_sampling_adjusted_items",
                "Sum of adjusted counts of kept items (estimates the volume before sampling)",
                ["signal"],
                registry=registry,
            ),
        )

    def process(self, batch: Batch) -> Output:
        if batch.signal is Signal.TRACES:
            return self._process_traces(batch)
        if batch.signal is Signal.LOGS:
            return self._process_logs(batch)
        return Output.of(batch)

    # ------------------------------------------------------------------ traces

    def _process_traces(self, batch: Batch) -> Output:
        request = cast(ExportTraceServiceRequest, batch.request)
        traces: dict[bytes, Trace] = {}
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    tid = span.trace_id
                    t = traces.get(tid)
                    if t is None:
                        t = traces[tid] = Trace()
                    t.add(rs, span)
        complete = bool(batch.notes.get("complete_traces"))
        verdicts: dict[bytes, Decision] = {}
        tally: Tally[tuple[str, str]] = Tally()
        adjusted_sum = 0.0
        for tid, t in traces.items():
            d = verdicts[tid] = self._trace_decision(tid, t, complete, batch.received_at)
            n = len(t.spans)
            tally["kept" if d.keep else "dropped", d.reason] += n
            if d.keep:
                adjusted_sum += d.adjusted * n
        dropped = 0
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                kept: list[Span] = []
                for span in ss.spans:
                    d = verdicts[span.trace_id]
                    if d.keep:
                        _mark_span(span, d)
                        kept.append(span)
                if len(kept) != len(ss.spans):
                    dropped += len(ss.spans) - len(kept)
                    _keep_only(ss.spans, kept)
        prune_empty(request)
        return self._finish(batch, "traces", tally, adjusted_sum, dropped)

    def _trace_decision(self, tid: bytes, t: Trace, complete: bool, received_at: float) -> Decision:
        valid = valid_trace_id(tid)
        cached = self._decisions.get(tid) if valid else None
        if cached is not None and not complete and (cached.keep or not t.errors):
            self._decisions.move_to_end(tid)
            return Decision(cached.keep, "follow_trace", cached.adjusted, cached.threshold)
        decision = self._decide(tid, t, received_at)
        if valid:
            decisions = self._decisions
            if cached is not None:
                del decisions[tid]  # re-inserted at the end: most recently used
            decisions[tid] = decision
            while len(decisions) > self.config.decision_cache_size:
                decisions.popitem(last=False)
        return decision

    def _decide(self, tid: bytes, t: Trace, received_at: float) -> Decision:
        upstream = t.upstream
        factor = consistent.adjusted_count(upstream)
        if t.errors:
            end = t.end / 1e9 or received_at
            verdict = self._flood.admit(primary_fingerprint(t.errors), end)
            return Decision(verdict.keep, verdict.reason, verdict.adjusted * factor)
        if tid in self._error_logged:
            return Decision(True, "error", factor)
        threshold = self.config.latency_threshold
        if threshold > 0 and (t.end - t.start) / 1e9 >= threshold:
            return Decision(True, "latency", factor)
        if self._rules and any(
            rule(s.attributes) or rule(rs.resource.attributes) for rs, s in t.spans for rule in self._rules
        ):
            return Decision(True, "rule", factor)
        return self._probability(tid, t.spans[0][1].trace_state, upstream)

    def _probability(self, tid: bytes, tracestate: str, upstream: int) -> Decision:
        effective = max(self._threshold, upstream)
        if effective >= consistent.MAX_THRESHOLD:  # probability 0: nothing passes
            return Decision(False, "probability", 0.0)
        keep = consistent.randomness(tid, tracestate) >= effective
        if effective == self._threshold:  # no upstream sampler: one of two shared decisions
            return self._by_probability[keep]
        return Decision(keep, "probability", consistent.adjusted_count(effective), effective or None)

    # ------------------------------------------------------------------ logs

    def _process_logs(self, batch: Batch) -> Output:
        request = cast(ExportLogsServiceRequest, batch.request)
        tally: Tally[tuple[str, str]] = Tally()
        adjusted_sum = 0.0
        dropped = 0
        for rl in request.resource_logs:
            service = attributes.get_str(rl.resource.attributes, "service.name", "unknown_service")
            for sl in rl.scope_logs:
                kept = []
                for record in sl.log_records:
                    d = self._log_decision(record.severity_number, record.trace_id, service)
                    tally["kept" if d.keep else "dropped", d.reason] += 1
                    if d.keep:
                        attributes.set_value(record.attributes, ADJUSTED_COUNT, d.adjusted)
                        adjusted_sum += d.adjusted
                        kept.append(record)
                if len(kept) != len(sl.log_records):
                    dropped += len(sl.log_records) - len(kept)
                    _keep_only(sl.log_records, kept)
        prune_empty(request)
        return self._finish(batch, "logs", tally, adjusted_sum, dropped)

    def _log_decision(self, severity: int, tid: bytes, service: str) -> Decision:
        traced = valid_trace_id(tid)
        if severity >= SEVERITY_ERROR:
            if traced:
                self._error_logged[tid] = None
                while len(self._error_logged) > self.config.decision_cache_size:
                    self._error_logged.popitem(last=False)
            return Decision(True, "severity")
        if traced:
            cached = self._decisions.get(tid)
            if cached is not None:
                return Decision(cached.keep, "follow_trace", cached.adjusted)
            if tid in self._error_logged:
                return Decision(True, "follow_trace")
            d = self._probability(tid, "", 0)
            return Decision(d.keep, d.reason, d.adjusted)
        p = self.config.logs.per_service_probability.get(service, self.config.logs.default_probability)
        keep = p >= 1.0 or (p > 0.0 and self._rng.random() < p)
        return Decision(keep, "probability", 1.0 / p if keep else 0.0)

    # ------------------------------------------------------------------ shared

    def _finish(
        self, batch: Batch, signal: str, tally: Tally[tuple[str, str]], adjusted_sum: float, dropped: int
    ) -> Output:
        for (decision, reason), n in tally.items():
            self._items.labels(signal, decision, reason).inc(n)
        if adjusted_sum:
            self._adjusted.labels(signal).inc(adjusted_sum)
        out = Output.of(batch)
        if dropped:
            out.dropped["sampled"] += dropped
        return out

    def decision_for(self, trace_id: bytes) -> Decision | None:
        """The cached decision for a trace (for tests and the demo)."""
        return self._decisions.get(trace_id)


def _mark_span(span: Span, d: Decision) -> None:
    attributes.set_value(span.attributes, ADJUSTED_COUNT, d.adjusted)
    if d.threshold:
        span.trace_state = consistent.with_threshold(span.trace_state, d.threshold)


def _keep_only(container: object, kept: list) -> None:  # type: ignore[type-arg]
    copies = [type(item)() for item in kept]
    for dst, src in zip(copies, kept, strict=True):
        dst.CopyFrom(src)
    del container[:]  # type: ignore[attr-defined]
    container.extend(copies)  # type: ignore[attr-defined]


def _compile(rule: AttributeRule) -> Callable[[Iterable[KeyValue]], bool]:
    key = rule.key
    if rule.pattern is not None:
        regex = re.compile(rule.pattern)

        def by_pattern(attrs: Iterable[KeyValue]) -> bool:
            value = attributes.get(attrs, key)
            return value is not None and regex.search(str(value)) is not None

        return by_pattern
    wanted = {_text(v) for v in rule.values or ()}

    def by_value(attrs: Iterable[KeyValue]) -> bool:
        value = attributes.get(attrs, key)
        return value is not None and _text(value) in wanted

    return by_value


def _text(value: object) -> str:
    # YAML `true` and an attribute "true" should match either way.
    return str(value).lower() if isinstance(value, bool) else str(value)


@register_processor("sample", SampleConfig)
def create_sample(config: SampleConfig, context: ComponentContext) -> Processor:
    return SampleProcessor(config, context)
