"""The per-trace facts of one traces request that a sampling decision needs, and the filter that
keeps the decided traces.

Every span of every request passes through here, so the common case is read column-wise: one
list comprehension over the whole request per fact (trace id, status, tracestate, times) and C
builtins (``Counter.update``, ``min``/``max``, ``bytes.count``) to combine them; the request is
serialized once for byte-level pre-checks, unless classify's note names the error traces. The rare cases — error traces, upstream thresholds,
traces that may be slow, attribute rules — are then worked out exactly, only for the traces they
concern. Dropped spans are deleted in place (``inplace``), never copied.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import chain, compress, repeat
from operator import attrgetter
from typing import TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from errorgate import attributes
from errorgate.processors.sampling import consistent, inplace
from errorgate.signals import prune_empty

FINGERPRINT = "errorgate.error.fingerprint"
ORIGIN = "errorgate.error.origin"
_FINGERPRINT_BYTES = FINGERPRINT.encode()
_ORIGIN_BYTES = ORIGIN.encode()
_ERROR = Status.STATUS_CODE_ERROR
# map() with these loops in C: cheaper than a comprehension's bytecode per span.
_TRACE_ID = attrgetter("trace_id")
_TRACE_STATE = attrgetter("trace_state")
_START = attrgetter("start_time_unix_nano")
_END = attrgetter("end_time_unix_nano")

Pair = tuple[ResourceSpans, Span]
ErrorSpan = tuple[ResourceSpans, Span, bytes]  # with the span serialized
D = TypeVar("D")


class Facts:
    """What the decisions of one request's traces need, per trace id.

    The request's spans are held as one flat list (with their trace ids alongside) so every fact
    is one comprehension over the whole request, not one per scope: a request from many services
    has many small scopes, and per-scope overhead then costs as much as the spans themselves."""

    __slots__ = (
        "_by_trace",
        "_resources",
        "counts",
        "data",
        "errors",
        "first_state",
        "request",
        "scopes",
        "shape",
        "spans",
        "states",
        "tids",
        "times",
        "upstream",
    )

    def __init__(self, request: ExportTraceServiceRequest) -> None:
        self.request = request
        self.scopes: list[tuple[ResourceSpans, ScopeSpans, int]] = []  # (resource, scope, spans in it)
        self.shape: list[int] = []  # scopes per resource
        self.spans: list[Span] = []
        self.tids: list[bytes] = []
        self.states: list[str] = []  # filled only when some span has a tracestate
        self.counts: Counter[bytes] = Counter()  # spans per trace, in order of first appearance
        self.errors: dict[bytes, list[ErrorSpan]] = {}  # error traces only: their error spans
        self.first_state: dict[bytes, str] = {}  # filled only when some span has a tracestate
        self.upstream: dict[bytes, int] = {}  # highest ``th`` already on a trace's spans, when > 0
        # (earliest start, latest end) in ns: for error traces, and for all when one may be slow.
        self.times: dict[bytes, list[int]] = {}
        # The request serialized before any change (for byte-level pre-checks); b"" when the
        # error traces came from classify's note (then nothing needed it).
        self.data = b""
        self._resources: list[ResourceSpans] | None = None
        self._by_trace: dict[bytes, list[Pair]] | None = None

    def pairs(self, only: set[bytes] | None = None) -> list[tuple[bytes, ResourceSpans, Span]]:
        """(trace id, resource, span) of every span, or of the traces in ``only``."""
        if self._resources is None:  # each span's resource, built at the first need
            self._resources = list(chain.from_iterable(repeat(rs, n) for rs, _, n in self.scopes))
        tids, resources, spans = self.tids, self._resources, self.spans
        if only is None:
            return list(zip(tids, resources, spans, strict=True))
        return [(tids[i], resources[i], spans[i]) for i, t in enumerate(tids) if t in only]

    def by_trace(self) -> dict[bytes, list[Pair]]:
        """Every trace's spans with their resource (for attribute rules), built once."""
        if self._by_trace is None:
            self._by_trace = {}
            for t, rs, s in self.pairs():
                self._by_trace.setdefault(t, []).append((rs, s))
        return self._by_trace


def gather(
    request: ExportTraceServiceRequest,
    latency_threshold: float,
    noted_errors: frozenset[bytes] | None = None,
) -> Facts:
    """The facts of every trace in ``request`` (``latency_threshold`` in seconds, 0 = off).

    ``noted_errors``: classify's ``ERROR_TRACES_NOTE`` if the batch has it — every trace with a
    failing span is in it (maybe more: those are checked exactly), so no other span's status or
    bytes need a look and the request is not serialized."""
    facts = Facts(request)
    per_scope: list[list[Span]] = []
    shape = facts.shape
    for rs in request.resource_spans:
        scopes = rs.scope_spans
        shape.append(len(scopes))
        for ss in scopes:
            spans = list(ss.spans)  # the wrappers once; the comprehensions below reuse them
            facts.scopes.append((rs, ss, len(spans)))
            per_scope.append(spans)
    spans = facts.spans = list(chain.from_iterable(per_scope))
    tids = facts.tids = list(map(_TRACE_ID, spans))
    facts.counts.update(tids)
    if noted_errors is None:
        # Most spans carry no status at all: only those that do have theirs read.
        with_status = [i for i, s in enumerate(spans) if s.HasField("status")]
        status_errors = {tids[i] for i in with_status if spans[i].status.code == _ERROR}
        facts.data = request.SerializeToString()
        _errors(facts, status_errors)
    else:
        _noted_errors(facts, noted_errors)
    if any(map(_TRACE_STATE, spans)):
        facts.states = list(map(_TRACE_STATE, spans))
        _states(facts)
    # No trace lasts longer than the request's whole time span: when that is below the threshold,
    # per-trace times are needed only for error traces (worked out with them).
    if latency_threshold > 0 and spans:
        earliest = min(map(_START, spans))
        latest = max(map(_END, spans))
        if (latest - earliest) / 1e9 >= latency_threshold:
            _times(facts, facts.pairs())
    return facts


def _errors(facts: Facts, status_errors: set[bytes]) -> None:
    """Fill ``facts.errors`` exactly: status ERROR or a fingerprint attribute.

    A fingerprint attribute puts its key's text into the serialized request. The text cannot
    overlap itself, so when the request holds no more occurrences of it than the spans of the
    traces already known to be error traces (by status), no other span can carry one and the
    other spans need no check at all (the common case: classify fingerprints error spans)."""
    total = facts.data.count(_FINGERPRINT_BYTES)
    candidates = set(status_errors)
    pairs = facts.pairs(candidates) if candidates else []
    # The spans' bytes serve the count below and primary_fingerprint's pre-checks; with neither
    # key's text anywhere in the request those checks are known to fail, and b"" says so.
    if total or _ORIGIN_BYTES in facts.data:
        serialized = [s.SerializeToString() for _, _, s in pairs]
    else:
        serialized = [b""] * len(pairs)
    if total and sum(data.count(_FINGERPRINT_BYTES) for data in serialized) != total:
        # Some other span holds the text: check them one by one.
        candidates.update(
            t
            for t, s in zip(facts.tids, facts.spans, strict=True)
            if t not in candidates and _has_fingerprint(s)
        )
        pairs = facts.pairs(candidates)
        serialized = [s.SerializeToString() for _, _, s in pairs]
    if not pairs:
        return
    errors = facts.errors
    for (t, rs, s), data in zip(pairs, serialized, strict=True):
        if s.status.code == _ERROR or (
            total and _FINGERPRINT_BYTES in data and attributes.has(s.attributes, FINGERPRINT)
        ):
            errors.setdefault(t, []).append((rs, s, data))
    _times(facts, pairs)


def _noted_errors(facts: Facts, noted: frozenset[bytes]) -> None:
    """Fill ``facts.errors`` exactly, looking only at the spans of the traces in ``noted``."""
    counts = facts.counts
    candidates = {t for t in noted if t in counts}
    if not candidates:
        return
    pairs = facts.pairs(candidates)
    errors = facts.errors
    for t, rs, s in pairs:
        data = s.SerializeToString()  # for the fingerprint pre-checks here and in primary_fingerprint
        if s.status.code == _ERROR or (
            _FINGERPRINT_BYTES in data and attributes.has(s.attributes, FINGERPRINT)
        ):
            errors.setdefault(t, []).append((rs, s, data))
    _times(facts, pairs)


def _has_fingerprint(span: Span) -> bool:
    # The key can only be an attribute if its text is in the serialized span (checked in C first).
    return _FINGERPRINT_BYTES in span.SerializeToString() and attributes.has(span.attributes, FINGERPRINT)


def _states(facts: Facts) -> None:
    first, upstream = facts.first_state, facts.upstream
    for t, state in zip(facts.tids, facts.states, strict=True):
        if t not in first:
            first[t] = state
        if state:
            th = consistent.get_threshold(state) or 0
            if th > upstream.get(t, 0):
                upstream[t] = th


def _times(facts: Facts, pairs: list[tuple[bytes, ResourceSpans, Span]]) -> None:
    times = facts.times
    for t, _, s in pairs:
        start, end = s.start_time_unix_nano, s.end_time_unix_nano
        found = times.get(t)
        if found is None:
            times[t] = [start, end]
        else:
            if start < found[0]:
                found[0] = start
            if end > found[1]:
                found[1] = end


def keep_only(facts: Facts, kept: Mapping[bytes, D], mark: Callable[[list[Span], list[D]], None]) -> int:
    """Keep the spans of the traces in ``kept`` (``mark`` gets them with their traces' values),
    drop the others in place, remove the scopes and resources left empty (as
    ``signals.prune_empty``); returns how many spans were dropped."""
    request, spans, tids = facts.request, facts.spans, facts.tids
    if not kept:
        del request.resource_spans[:]
        return len(tids)
    flags = list(map(kept.__contains__, tids))
    idx = list(compress(range(len(tids)), flags))
    mark([spans[i] for i in idx], [kept[tids[i]] for i in idx])
    if len(idx) == len(tids):
        prune_empty(request)  # only empty containers that came in can go
        return 0
    # Scopes and resources left empty are deleted whole (their spans with them), in runs.
    scopes = iter(facts.scopes)
    start = 0
    kept_resources = []
    for r, n_scopes in enumerate(facts.shape):
        kept_scopes = []
        for j in range(n_scopes):
            _, ss, n = next(scopes)
            end = start + n
            part = flags[start:end]
            start = end
            if any(part):
                kept_scopes.append(j)
                if not all(part):
                    inplace.keep_indices(ss.spans, list(compress(range(n), part)), n)
        if kept_scopes:
            kept_resources.append(r)
            if len(kept_scopes) != n_scopes:
                inplace.keep_indices(request.resource_spans[r].scope_spans, kept_scopes, n_scopes)
    inplace.keep_indices(request.resource_spans, kept_resources, len(facts.shape))
    return len(tids) - len(idx)


def primary_fingerprint(errors: list[ErrorSpan]) -> str:
    """The fingerprint flood control counts a trace under: its origin's, else its earliest error's.

    Attributes are looked up only in spans whose serialization holds the key's text."""
    origin = [
        e
        for e in errors
        if _ORIGIN_BYTES in e[2] and attributes.get(e[1].attributes, ORIGIN) in (True, "true")
    ]
    rs, span, data = min(origin or errors, key=lambda e: e[1].start_time_unix_nano)
    fingerprint = attributes.get_str(span.attributes, FINGERPRINT) if _FINGERPRINT_BYTES in data else ""
    if fingerprint:
        return fingerprint
    service = attributes.get_str(rs.resource.attributes, "service.name", "unknown_service")
    return hashlib.sha256(f"{service}\0{span.status.message}".encode()).hexdigest()[:16]
