"""``sample``: error-aware tail sampling with correct statistics.

Config (all optional; defaults shown)::

    sample:
      decision_wait: 10s          # trace assembly window (read by the assembler in front of classify/sample)
      num_traces: 50000           # traces held at once; past it the oldest is released early (never dropped)
      max_spans_per_trace: 10000  # a giant trace is released early so it cannot starve others
      max_bytes_per_trace: 4194304
      max_total_mib: 256          # bytes held over all traces
      late_cache_size: 100000     # released trace ids remembered, so late spans are marked late
      hold_logs: true             # log records with a trace id wait for their trace's decision
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
With the ``redis`` extension the decisions the trace id does not reproduce (error, flood,
latency, rule) are shared, so a late span landing on another replica (a restart, re-routing)
follows them too, adjusted count included; the flood budgets are spent in the same call.

Logs: severity >= ERROR always kept (``severity``) and marks its trace to be kept; lower
severities follow their trace's cached decision, or, before the trace is decided, the same
consistent trace-id test healthy traces use (rare: ``errorgate.pipeline.hold.logs`` in front makes traced
records wait for their trace's decision); records without a trace id are kept with their
service's probability (``logs.per_service_probability``, else ``logs.default_probability``).

Metrics: ``errorgate_sampled_items_total{signal,decision,reason}``,
``errorgate_sampling_adjusted_items_total{signal}``; drops are reported as ``Output.dropped["sampled"]``.
"""

from __future__ import annotations

import random
from collections import Counter as Tally
from collections import OrderedDict
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import Counter

from errorgate import attributes
from errorgate.component import Capabilities, ComponentContext, Factory, Output, Processor
from errorgate.pipeline.assembly.assembler import get_or_create
from errorgate.processors.errorstate import (
    DecisionInput,
    LocalFloodState,
    RedisDecisions,
    flood_state,
    shared_decisions,
)
from errorgate.processors.sampling import consistent, inplace, logs, traces
from errorgate.processors.sampling.config import AttributeRule as AttributeRule  # public names, kept here
from errorgate.processors.sampling.config import FloodConfig as FloodConfig
from errorgate.processors.sampling.config import LogSamplingConfig as LogSamplingConfig
from errorgate.processors.sampling.config import SampleConfig
from errorgate.processors.sampling.flood import FloodLimiter, FloodVerdict
from errorgate.processors.sampling.mark import ADJUSTED_BYTES, Marker
from errorgate.processors.sampling.mark import ADJUSTED_COUNT as ADJUSTED_COUNT  # public name, kept here too
from errorgate.processors.sampling.rules import compile_rule
from errorgate.signals import ERROR_TRACES_NOTE, NO_UPSTREAM_TAGS_NOTE, Batch, Signal, prune_empty

SEVERITY_ERROR = 17  # OTLP SeverityNumber ERROR
_NO_TRACE = bytes(16)
_SEVERITY = attrgetter("severity_number")
_TRACE_ID = attrgetter("trace_id")


@dataclass(frozen=True, slots=True)
class Decision:
    keep: bool
    reason: str
    adjusted: float = 1.0
    threshold: int | None = None  # th to raise tracestate to (probability decisions only)


_BY_SEVERITY = Decision(True, "severity")
_FOLLOW_KEPT = Decision(True, "follow_trace")


def _follow(cached: Decision) -> Decision:
    """A log record's decision following its trace's (log records carry no threshold)."""
    return Decision(cached.keep, "follow_trace", cached.adjusted)


class SampleProcessor(Processor):
    signals = frozenset({Signal.TRACES, Signal.LOGS})
    # Tail sampling decides on whole traces; what it does not keep is dropped as "sampled".
    capabilities = Capabilities(needs_whole_traces=True, drop_reasons=frozenset({"sampled"}))

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
        self._never = Decision(False, "probability", 0.0)  # probability 0
        # Log records carry no tracestate, so their probability decisions carry no threshold.
        self._log_by_probability = {keep: Decision(keep, "probability", adjusted) for keep in (False, True)}
        self._latency = config.latency_threshold
        self._marker = Marker()
        self._children: dict[object, Any] = {}  # metric children by labels
        self._flood = FloodLimiter(
            config.flood.first_n_per_minute, config.flood.rate_per_second_after, config.flood.max_fingerprints
        )
        # Flood budgets in this process, or shared by replicas (the redis extension): a batch's
        # error traces are admitted at once, before its decisions (``_flood_verdicts``). With the
        # extension, trace decisions are shared too (late spans follow them on any replica), and
        # the shared flood budgets are spent in that same call (``_share``), not here.
        local_floods = LocalFloodState(self._flood)
        self._shared: RedisDecisions | None = shared_decisions(context, local_floods)
        self._floods = local_floods if self._shared is not None else flood_state(context, local_floods)
        self._verdicts: dict[bytes, FloodVerdict] = {}
        self._decisions: OrderedDict[bytes, Decision] = OrderedDict()
        self._error_logged: OrderedDict[bytes, None] = OrderedDict()  # traces an ERROR log marked for keeping
        self._rules = [compile_rule(r.key, r.values, r.pattern) for r in config.attribute_rules]
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
        noted = batch.notes.get(ERROR_TRACES_NOTE)
        facts = traces.gather(request, self._latency, noted if isinstance(noted, frozenset) else None)
        complete = bool(batch.notes.get("complete_traces"))
        self._verdicts = self._flood_verdicts(facts, complete, batch.received_at)
        kept: dict[bytes, Decision] = {}
        adjusted_sum = 0.0
        # Spans per decision, counted by the decision's identity (most traces share one of two).
        counted: dict[int, tuple[Decision, int]] = {}
        # The common trace — complete, no error, no upstream threshold or tracestate, cannot be
        # slow, no rules — is decided here inline by its id alone; all others by _trace_decision.
        special = set().union(facts.errors, facts.upstream, facts.first_state, facts.times)
        error_logged = self._error_logged
        simple = complete and not self._rules and self._threshold < consistent.MAX_THRESHOLD
        by_probability, threshold = self._by_probability, self._threshold
        decisions, cache_size = self._decisions, self.config.decision_cache_size
        chosen: list[Decision] = []
        for tid in facts.counts:
            if (
                simple
                and tid not in special
                and tid not in error_logged
                and len(tid) == 16
                and tid != _NO_TRACE
            ):
                d = by_probability[int.from_bytes(tid[9:], "big") >= threshold]
                decisions.pop(tid, None)  # (re-)inserted at the end: most recently used
                decisions[tid] = d
                if len(decisions) > cache_size:
                    decisions.popitem(last=False)
            else:
                d = self._trace_decision(tid, facts, complete, batch.received_at)
            chosen.append(d)
        if self._shared is not None:
            self._share(facts, complete, batch.received_at, chosen)
        for (tid, n), d in zip(facts.counts.items(), chosen, strict=True):
            if d.keep:
                kept[tid] = d
                adjusted_sum += d.adjusted * n  # in trace order, as the metric always summed
            seen = counted.get(id(d))
            counted[id(d)] = (d, n if seen is None else seen[1] + n)
        tally: Tally[tuple[str, str]] = Tally()
        for d, n in counted.values():
            tally["kept" if d.keep else "dropped", d.reason] += n
        marker = self._marker
        untagged = batch.notes.get(NO_UPSTREAM_TAGS_NOTE) is True

        def mark(spans: list[Span], ds: list[Decision]) -> None:
            # An adjusted count already on a span (an upstream errorgate) is replaced, else
            # appended; without the request's bytes, only the kept spans' are searched.
            if untagged:
                fresh = True
            elif facts.data:
                fresh = ADJUSTED_BYTES not in facts.data
            else:
                # (A match across two spans' bytes is a false alarm: marked exactly, one by one.)
                fresh = ADJUSTED_BYTES not in b"".join([s.SerializeToString() for s in spans])
            marker.spans(spans, [(d.adjusted, d.threshold) for d in ds], fresh)

        dropped = traces.keep_only(facts, kept, mark)
        return self._finish(batch, "traces", tally, adjusted_sum, dropped)

    def _share(self, facts: traces.Facts, complete: bool, received_at: float, chosen: list[Decision]) -> None:
        """Replace this replica's decisions (``chosen``, in trace order) by the shared ones: the
        stored decision a late span follows, error traces admitted through the shared flood
        budgets. Only decisions the trace id does not reproduce are stored (not ``probability``),
        so a batch of healthy whole traces makes no call at all; a late batch asks for each trace."""
        assert self._shared is not None
        at: list[int] = []
        entries: list[DecisionInput] = []
        for i, (tid, d) in enumerate(zip(facts.counts, chosen, strict=True)):
            if len(tid) != 16 or tid == _NO_TRACE:
                continue
            errors = facts.errors.get(tid)
            if complete and not errors and d.reason == "probability":
                continue
            error = None
            if errors:
                error = (traces.primary_fingerprint(errors), facts.times[tid][1] / 1e9 or received_at)
            factor = consistent.adjusted_count(facts.upstream.get(tid, 0))
            at.append(i)
            entries.append((tid, error, factor, (d.keep, d.reason, d.adjusted, d.threshold)))
        answers = self._shared.decide(complete, entries)
        if not answers:
            return  # none asked for, or Redis did not answer: this replica's own decisions stand
        decisions = self._decisions
        for i, (tid, *_), (keep, reason, adjusted, threshold) in zip(at, entries, answers, strict=True):
            d = chosen[i]
            if (d.keep, d.reason, d.adjusted, d.threshold) != (keep, reason, adjusted, threshold):
                d = chosen[i] = Decision(keep, reason, adjusted, threshold)
                decisions[tid] = d  # what this replica's late spans follow from now on

    def _trace_decision(
        self, tid: bytes, facts: traces.Facts, complete: bool, received_at: float
    ) -> Decision:
        valid = len(tid) == 16 and tid != _NO_TRACE
        decisions = self._decisions
        cached = decisions.get(tid) if valid else None
        if cached is not None and not complete and (cached.keep or tid not in facts.errors):
            decisions.move_to_end(tid)
            return Decision(cached.keep, "follow_trace", cached.adjusted, cached.threshold)
        decision = self._decide(tid, facts, received_at)
        if valid:
            if cached is not None:
                del decisions[tid]  # re-inserted at the end: most recently used
            decisions[tid] = decision
            if len(decisions) > self.config.decision_cache_size:
                decisions.popitem(last=False)
        return decision

    def _decide(self, tid: bytes, facts: traces.Facts, received_at: float) -> Decision:
        upstream = facts.upstream.get(tid, 0)
        errors = facts.errors.get(tid)
        if errors is None and not upstream and tid not in self._error_logged:
            # The common healthy trace: only the latency and rule tests stand before the coin.
            times = facts.times.get(tid)
            if (times is None or (times[1] - times[0]) / 1e9 < self._latency) and not self._rules:
                if self._threshold >= consistent.MAX_THRESHOLD:
                    return self._never
                state = facts.first_state.get(tid, "")
                return self._by_probability[consistent.randomness(tid, state) >= self._threshold]
        factor = consistent.adjusted_count(upstream)
        if errors:
            times = facts.times[tid]
            end = times[1] / 1e9 or received_at
            verdict = self._verdicts.pop(tid, None)
            if verdict is None:  # (its cached decision was evicted meanwhile: admitted alone)
                (verdict,) = self._floods.admit([(traces.primary_fingerprint(errors), end)])
            return Decision(verdict.keep, verdict.reason, verdict.adjusted * factor)
        if tid in self._error_logged:
            return Decision(True, "error", factor)
        times = facts.times.get(tid)
        if times is not None and self._latency > 0 and (times[1] - times[0]) / 1e9 >= self._latency:
            return Decision(True, "latency", factor)
        if self._rules and any(
            rule(s.attributes) or rule(rs.resource.attributes)
            for rs, s in facts.by_trace()[tid]
            for rule in self._rules
        ):
            return Decision(True, "rule", factor)
        return self._probability(tid, facts.first_state.get(tid, ""), upstream)

    def _flood_verdicts(
        self, facts: traces.Facts, complete: bool, received_at: float
    ) -> dict[bytes, FloodVerdict]:
        """Flood verdicts for the error traces ``_decide`` will meet, in the order it meets
        them: those not following a cached decision to keep (``_trace_decision``)."""
        pending: list[bytes] = []
        for tid in facts.counts:
            if not facts.errors.get(tid):
                continue
            if not complete and len(tid) == 16 and tid != _NO_TRACE:
                cached = self._decisions.get(tid)
                if cached is not None and cached.keep:
                    continue
            pending.append(tid)
        if not pending:
            return {}
        admits = [
            (traces.primary_fingerprint(facts.errors[tid]), facts.times[tid][1] / 1e9 or received_at)
            for tid in pending
        ]
        return dict(zip(pending, self._floods.admit(admits), strict=True))

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
        decided: list[Decision] = []
        dropped = 0
        adjusted_sum = 0.0
        decide = self._log_decision
        decisions, error_logged = self._decisions, self._error_logged
        threshold, by_probability = self._threshold, self._log_by_probability
        column_wise = threshold < consistent.MAX_THRESHOLD  # (probability 0 is decided per record)
        cache_size = self.config.decision_cache_size
        mark = self._marker.items
        untagged = batch.notes.get(NO_UPSTREAM_TAGS_NOTE) is True  # then no adjusted count to replace
        for rl in request.resource_logs:
            service: str | None = None  # looked up only for records without a trace id
            for sl in rl.scope_logs:
                records = list(sl.log_records)
                if not records:
                    continue
                tids = list(map(_TRACE_ID, records))
                sevs = list(map(_SEVERITY, records))
                ds = None
                if column_wise:
                    ds = logs.scope_decisions(
                        tids,
                        sevs,
                        trace_decisions=decisions,
                        error_logged=error_logged,
                        cache_size=cache_size,
                        threshold=threshold,
                        by_probability=by_probability,
                        by_severity=_BY_SEVERITY,
                        follow_kept=_FOLLOW_KEPT,
                        follow=_follow,
                    )
                if ds is None:  # record by record, in order
                    if service is None and not all(len(t) == 16 and t != _NO_TRACE for t in tids):
                        service = attributes.get_str(
                            rl.resource.attributes, "service.name", "unknown_service"
                        )
                    ds = [decide(sev, tid, service or "") for sev, tid in zip(sevs, tids, strict=True)]
                decided += ds
                keep = [i for i, d in enumerate(ds) if d.keep]
                adjusted = [ds[i].adjusted for i in keep]
                mark([records[i] for i in keep], adjusted, untagged)
                for value in adjusted:  # one by one, as the metric always summed
                    adjusted_sum += value
                if len(keep) != len(records):
                    dropped += len(records) - len(keep)
                    inplace.keep_indices(sl.log_records, keep, len(records))
        prune_empty(request)
        # Decisions are few distinct (mostly shared) objects: count them by identity, in C.
        ids = list(map(id, decided))
        by_id = dict(zip(ids, decided, strict=True))
        tally: Tally[tuple[str, str]] = Tally()
        for key, n in Tally(ids).items():
            d = by_id[key]
            tally["kept" if d.keep else "dropped", d.reason] += n
        return self._finish(batch, "logs", tally, adjusted_sum, dropped)

    def _log_decision(self, severity: int, tid: bytes, service: str) -> Decision:
        traced = len(tid) == 16 and tid != _NO_TRACE
        if severity >= SEVERITY_ERROR:
            if traced:
                self._error_logged[tid] = None
                while len(self._error_logged) > self.config.decision_cache_size:
                    self._error_logged.popitem(last=False)
            return _BY_SEVERITY
        if traced:
            cached = self._decisions.get(tid)
            if cached is not None:
                return _follow(cached)
            if tid in self._error_logged:
                return _FOLLOW_KEPT
            if self._threshold >= consistent.MAX_THRESHOLD:
                return self._never
            return self._log_by_probability[int.from_bytes(tid[-7:], "big") >= self._threshold]
        p = self.config.logs.per_service_probability.get(service, self.config.logs.default_probability)
        keep = p >= 1.0 or (p > 0.0 and self._rng.random() < p)
        return Decision(keep, "probability", 1.0 / p if keep else 0.0)

    # ------------------------------------------------------------------ shared

    def _finish(
        self, batch: Batch, signal: str, tally: Tally[tuple[str, str]], adjusted_sum: float, dropped: int
    ) -> Output:
        for (decision, reason), n in tally.items():
            child = self._children.get((signal, decision, reason))
            if child is None:  # labels() costs microseconds: each child is looked up once
                child = self._children[signal, decision, reason] = self._items.labels(
                    signal, decision, reason
                )
            child.inc(n)
        if adjusted_sum:
            adjusted = self._children.get(signal)
            if adjusted is None:
                adjusted = self._children[signal] = self._adjusted.labels(signal)
            adjusted.inc(adjusted_sum)
        # Every item was decided once: the tally is the item count (no recount of the request).
        out = Output(batches=[batch] if tally.total() > dropped else [])
        if dropped:
            out.dropped["sampled"] += dropped
        return out

    def decision_for(self, trace_id: bytes) -> Decision | None:
        """The cached decision for a trace (for tests and the demo)."""
        return self._decisions.get(trace_id)


def create_sample(config: SampleConfig, context: ComponentContext) -> Processor:
    return SampleProcessor(config, context)


factory: Factory[SampleConfig, Processor] = Factory("sample", SampleConfig, create_sample, SampleProcessor)
