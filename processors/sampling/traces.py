"""One trace's spans in a batch, gathered in one pass with the facts a sampling decision needs."""

from __future__ import annotations

import hashlib

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from errorgate import attributes
from errorgate.processors.sampling import consistent

FINGERPRINT = "errorgate.error.fingerprint"
ORIGIN = "errorgate.error.origin"
_FINGERPRINT_BYTES = FINGERPRINT.encode()

Spans = list[tuple[ResourceSpans, Span]]
_NO_ERRORS: Spans = []  # shared and never appended to


class Trace:
    """One trace's spans in a batch and the facts a decision needs, gathered in one pass."""

    __slots__ = ("end", "errors", "spans", "start", "upstream")

    def __init__(self) -> None:
        self.spans: Spans = []
        self.errors: Spans = _NO_ERRORS  # replaced by a list of its own at the first error
        self.upstream = 0  # highest ``th`` already in the spans' tracestate
        self.start = -1
        self.end = 0

    def add(self, rs: ResourceSpans, span: Span) -> None:
        self.spans.append((rs, span))
        if _is_error(span):
            if self.errors is _NO_ERRORS:
                self.errors = []
            self.errors.append((rs, span))
        state = span.trace_state
        if state:
            self.upstream = max(self.upstream, consistent.get_threshold(state) or 0)
        start = span.start_time_unix_nano
        if self.start < 0 or start < self.start:
            self.start = start
        if span.end_time_unix_nano > self.end:
            self.end = span.end_time_unix_nano


def _is_error(span: Span) -> bool:
    if span.status.code == Status.STATUS_CODE_ERROR:
        return True
    # The key can only be an attribute if its text is in the serialized span (checked in C first).
    return _FINGERPRINT_BYTES in span.SerializeToString() and attributes.has(span.attributes, FINGERPRINT)


def primary_fingerprint(errors: Spans) -> str:
    """The fingerprint flood control counts a trace under: its origin's, else its earliest error's."""
    origin = [e for e in errors if attributes.get(e[1].attributes, ORIGIN) in (True, "true")]
    rs, span = min(origin or errors, key=lambda e: e[1].start_time_unix_nano)
    fingerprint = attributes.get_str(span.attributes, FINGERPRINT)
    if fingerprint:
        return fingerprint
    service = attributes.get_str(rs.resource.attributes, "service.name", "unknown_service")
    return hashlib.sha256(f"{service}\0{span.status.message}".encode()).hexdigest()[:16]
