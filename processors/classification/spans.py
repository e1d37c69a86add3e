"""The per-span pass of ``classify``: error detection, requests and trace grouping in one loop.

Healthy spans are the bulk of traffic, so the loop decodes a span's attributes only when a key
that detection or the peer name reads is present in its serialized bytes (see ``scan``).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from errorgate.attributes import AttrValue, to_dict
from errorgate.processors.classification import cascade
from errorgate.processors.classification.detect import ErrorInfo, detect_span
from errorgate.processors.classification.domain import db_system, peer_name
from errorgate.processors.classification.scan import DETECT, DETECT_SET, PEER, decode_only, peer_of

# (span, decoded attributes or None, service, version, error, timestamp, peer, end time in ns)
Record = tuple[Span, "dict[str, AttrValue] | None", str, str, "ErrorInfo | None", float, str, int]
STATUS_OK = Status.STATUS_CODE_OK
STATUS_ERROR = Status.STATUS_CODE_ERROR
CopyBaggage = Callable[[MutableSequence[KeyValue], dict[str, AttrValue], MutableSequence[KeyValue]], None]


def scan(
    request: ExportTraceServiceRequest,
    received: float,
    late: bool,
    resource_of: Callable[[Resource], tuple[str, str]],
    copy_baggage: CopyBaggage | None,
) -> tuple[list[Record], dict[bytes, list[Record]], dict[tuple[str, int], list[int]]]:
    """(failing spans, spans by trace id (none when ``late``), [requests, failed] per service-second)."""
    detect_in, peer_in = DETECT.search, PEER.search
    errors: list[Record] = []
    traces: dict[bytes, list[Record]] = {}
    requests: dict[tuple[str, int], list[int]] = {}
    for rs in request.resource_spans:
        service, version = resource_of(rs.resource)
        for ss in rs.scope_spans:
            for span in ss.spans:
                kind = span.kind
                code = span.status.code
                attrs: dict[str, AttrValue] | None = None
                error: ErrorInfo | None = None
                data = b""
                if copy_baggage is not None:
                    attrs = to_dict(span.attributes)
                    error = detect_span(span, attrs)
                    copy_baggage(span.attributes, attrs, rs.resource.attributes)
                elif code != STATUS_OK:
                    # Healthy fast path: decode attributes only when a key detection reads is there.
                    data = span.SerializeToString()
                    if code == STATUS_ERROR or len(span.events):
                        attrs = to_dict(span.attributes)
                        error = detect_span(span, attrs)
                    elif detect_in(data):
                        # Only the keys detection reads; the rest only if the span did fail.
                        error = detect_span(span, decode_only(span.attributes, DETECT_SET))
                        if error is not None:
                            attrs = to_dict(span.attributes)
                peer = ""
                if kind in cascade.EXIT_KINDS:
                    if attrs is not None:
                        peer = peer_name(attrs) or db_system(attrs)
                    elif peer_in(data or span.SerializeToString()):
                        peer = peer_of(span.attributes)
                end = span.end_time_unix_nano
                ts = (end or span.start_time_unix_nano) / 1e9 or received
                if kind in cascade.ENTRY_KINDS or not span.parent_span_id:
                    # Aggregated per second: one window update per service-second, not per span.
                    counts = requests.get((service, int(ts)))
                    if counts is None:
                        counts = requests[(service, int(ts))] = [0, 0]
                    counts[0] += 1
                    counts[1] += error is not None
                record = (span, attrs, service, version, error, ts, peer, end)
                if error is not None:
                    errors.append(record)
                if not late:
                    group = traces.get(span.trace_id)
                    if group is None:
                        traces[span.trace_id] = [record]
                    else:
                        group.append(record)
    return errors, traces, requests
