"""The per-span pass of ``classify``: error detection, requests and trace grouping in one loop.

Healthy spans are the bulk of traffic, so the loop never decodes their attributes: a span is
serialized once (C) and judged from its bytes — no status ERROR, exception event or detection
key text means healthy; a single detection key is read in place (``scan.SpanBytes``); a span
whose bytes after the end time equal an earlier healthy span's is that same case again. Only
what the bytes cannot settle is decoded, so every answer is that of a full decode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableSequence, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from errorgate.attributes import AttrValue, to_dict
from errorgate.otlp.flat import scope_items
from errorgate.processors.classification import cascade
from errorgate.processors.classification.detect import ErrorInfo, detect_span
from errorgate.processors.classification.domain import db_system, peer_name
from errorgate.processors.classification.scan import DETECT_SET, SpanBytes, decode_only, resends

# (span, decoded attributes or None, service, version, error, timestamp, peer, end time in ns,
# serialized span or b"")
Record = tuple[Span, "dict[str, AttrValue] | None", str, str, "ErrorInfo | None", float, str, int, bytes]
STATUS_OK = Status.STATUS_CODE_OK
STATUS_ERROR = Status.STATUS_CODE_ERROR
STATUS_UNSET = Status.STATUS_CODE_UNSET
ENTRY_KINDS, EXIT_KINDS = cascade.ENTRY_KINDS, cascade.EXIT_KINDS
CopyBaggage = Callable[[MutableSequence[KeyValue], dict[str, AttrValue], MutableSequence[KeyValue]], None]


def scan(
    request: ExportTraceServiceRequest,
    received: float,
    late: bool,
    resource_of: Callable[[Resource], tuple[str, str]],
    copy_baggage: CopyBaggage | None,
    checks: SpanBytes,
    durations: dict[tuple[str, str, int], list[float]],
    wire: bytes | None = None,
) -> tuple[list[Record], dict[bytes, list[Record]], dict[tuple[str, str, int], list[int]], int]:
    """(failing spans, spans by trace id (none when ``late``), [requests, failed] per (service, version,
    second) (``durations``: their durations in seconds), number of spans). ``wire``: ``request``
    as upb serialized it, if at hand: span bytes are read out of it (``scope_items``), not serialized again."""
    errors: list[Record] = []
    traces: dict[bytes, list[Record]] = {}
    requests: dict[tuple[str, str, int], list[int]] = {}
    surely_healthy, peer_from, tail_of = checks.surely_healthy, checks.peer, checks.tail
    healthy_tails, use_tails = checks.healthy_tails, checks.use_tails
    lookups = hits = n_spans = 0
    # Copying baggage decodes every span's attributes: then no span is judged from its bytes.
    scopes = _scopes(request, resource_of, wire if copy_baggage is None else None)
    for service, version, resource, scope_spans, items in scopes:
        n_spans += len(scope_spans)
        at = 0
        for span in scope_spans:
            kind = span.kind
            end = span.end_time_unix_nano
            attrs: dict[str, AttrValue] | None = None
            error: ErrorInfo | None = None
            peer = ""
            data = b""
            if copy_baggage is not None:
                attrs = to_dict(span.attributes)
                error = detect_span(span, attrs)
                copy_baggage(span.attributes, attrs, resource.attributes)
                if kind in EXIT_KINDS:
                    peer = peer_name(attrs) or db_system(attrs)
            else:
                if items is not None:
                    data = items[at]
                    at += 1
                else:
                    data = span.SerializeToString()
                # Spans whose bytes after the end time equal a healthy span's (same kind)
                # have the same attributes, events and status: healthy, with its peer.
                # (Not tried for entry spans: their per-request attributes, such as the
                # URL or the client address, rarely repeat.)
                tail = tail_of(data, end) if use_tails and end and kind not in ENTRY_KINDS else None
                known = None
                if tail is not None:
                    lookups += 1
                    known = healthy_tails.get((kind, tail))
                if known is not None:
                    hits += 1
                    peer = known
                else:
                    attrs, error, peer = _detect(span, kind, data, surely_healthy, peer_from)
                    if error is None and tail is not None:
                        checks.remember_healthy(kind, tail, peer)
            ts = (end or span.start_time_unix_nano) / 1e9 or received
            if kind in ENTRY_KINDS or not span.parent_span_id:
                # Aggregated per second: one update per (service, version, second), not per span.
                counts = requests.get(key := (service, version, int(ts)))
                if counts is None:
                    counts = requests[key] = [0, 0]
                counts[0] += 1
                counts[1] += error is not None
                durations.setdefault(key, []).append(max(0, end - span.start_time_unix_nano) / 1e9)
            record = (span, attrs, service, version, error, ts, peer, end, data)
            if error is not None:
                errors.append(record)
            if not late:
                trace_id = span.trace_id
                group = traces.get(trace_id)
                if group is None:
                    traces[trace_id] = [record]
                else:
                    group.append(record)
    checks.tally(n_spans, lookups, hits)
    return errors, traces, requests, n_spans


def _scopes(
    request: ExportTraceServiceRequest,
    resource_of: Callable[[Resource], tuple[str, str]],
    wire: bytes | None,
) -> Iterator[tuple[str, str, Resource, Sequence[Span], Sequence[bytes] | None]]:
    """(service, version, resource, spans, the spans as serialized in ``wire``) of each scope of
    ``request``, in order; None for the bytes when ``wire`` is None or turns out not to be this
    request's bytes (then each span is serialized). Resumed once per scope, never per span."""
    all_items = scope_items(wire) if wire is not None else None
    scope_index = 0
    for rs in request.resource_spans:
        service, version = resource_of(rs.resource)
        for ss in rs.scope_spans:
            scope_spans = ss.spans
            items = None
            if all_items is not None and scope_index < len(all_items):
                items = all_items[scope_index]
                if len(items) != len(scope_spans):  # not the request's bytes after all
                    items = all_items = None
            scope_index += 1
            yield service, version, rs.resource, scope_spans, items


def _detect(
    span: Span,
    kind: int,
    data: bytes,
    surely_healthy: Callable[[Span, bytes, int, int], bool],
    peer_from: Callable[[Span, bytes], str],
) -> tuple[dict[str, AttrValue] | None, ErrorInfo | None, str]:
    """(decoded attributes if needed, error, peer) of a span from its serialized bytes: without
    status code ERROR (its bytes are \x18\x02), an exception event or a detection key, nothing
    in the bytes can fail the span, and attributes are decoded only when they must be read.
    (``find`` rather than ``in``: the latter goes through the buffer protocol.)"""
    attrs: dict[str, AttrValue] | None = None
    error: ErrorInfo | None = None
    find = data.find
    exception = find(b"exception") >= 0
    status_at = find(b"status_code")
    type_at = find(b"error.type")
    detect = status_at >= 0 or type_at >= 0
    error_bytes = find(b"\x18\x02") >= 0
    if exception or detect or error_bytes:
        # Reading the status builds a Python object for it: only when its code may be OK
        # (\x18\x01) or ERROR (\x18\x02); any other code is handled as unset by detection.
        code = span.status.code if error_bytes or find(b"\x18\x01") >= 0 else STATUS_UNSET
        if code == STATUS_OK:
            pass  # an explicit OK is final
        elif code == STATUS_ERROR or exception:
            attrs = to_dict(span.attributes)
            error = detect_span(span, attrs)
        elif detect and not surely_healthy(span, data, status_at, type_at):
            # Only the keys detection reads; the rest only if the span did fail.
            error = detect_span(span, decode_only(span.attributes, DETECT_SET))
            if error is not None:
                attrs = to_dict(span.attributes)
    peer = ""
    if kind in EXIT_KINDS:
        peer = peer_name(attrs) or db_system(attrs) if attrs is not None else peer_from(span, data)
    return attrs, error, peer


class NodeBuilder:
    """``cascade.Node`` of a scanned span; spans of failing traces only."""

    def __init__(self, retry_attributes: Sequence[str]) -> None:
        self.retry_attributes = list(retry_attributes)
        self._retry_keys = frozenset(retry_attributes)
        self._retry_texts = tuple(k.encode() for k in retry_attributes)

    def __call__(self, record: Record) -> cascade.Node:
        # The peer the scan found (exit spans only: the analysis reads no other span's peer).
        span, attrs, service, _, error, _, peer, end, data = record
        return cascade.Node(
            span.span_id,
            span.parent_span_id,
            span.name,
            span.kind,
            service,
            error is not None,
            end,
            peer,
            resends(attrs, self.retry_attributes) if attrs is not None else self._resends_of(span, data),
        )

    def _resends_of(self, span: Span, data: bytes) -> int:
        """The retry count of a span whose attributes were not decoded (``data``: its serialized
        bytes, if the scan made them): none of the retry keys' text in its bytes means no retry
        attribute; otherwise only those keys are decoded."""
        data = data or span.SerializeToString()
        if not any(data.find(key) >= 0 for key in self._retry_texts):
            return 0
        return resends(decode_only(span.attributes, self._retry_keys), self.retry_attributes)
