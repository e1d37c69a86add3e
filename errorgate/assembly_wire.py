"""Protobuf wire-format helpers for the trace assembler: regroup spans as bytes, parse once.

Rebuilding requests message by message (copy each Resource and Scope, append each Span) costs
Python work per span; serialized spans can instead be concatenated. The wire format allows it:
a ResourceSpans/ScopeSpans message is its fields in any order, a repeated field is its elements
one after another, and parsing the concatenation yields exactly the merged message.

A *head* is the serialized non-repeated part of a ResourceSpans (``resource`` + ``schema_url``)
or ScopeSpans (``scope`` + ``schema_url``): equal heads mean equal resources/scopes, so they
double as the keys that merge fragments by content.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

FIELD_1 = b"\x0a"  # field 1, length-delimited: resource_spans / resource / scope
FIELD_2 = b"\x12"  # field 2, length-delimited: scope_spans / spans
FIELD_3 = b"\x1a"  # field 3, length-delimited: schema_url


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_encode_varint(i) for i in range(4096)]


def varint(n: int) -> bytes:
    return _SMALL[n] if n < 4096 else _encode_varint(n)


def field(tag: bytes, data: bytes) -> bytes:
    return tag + (_SMALL[len(data)] if len(data) < 4096 else _encode_varint(len(data))) + data


def head(message: Resource | InstrumentationScope, schema_url: str) -> bytes:
    """Serialized ``resource``/``scope`` + ``schema_url`` fields (deterministic: a merge key)."""
    body = message.SerializeToString(deterministic=True)
    out = field(FIELD_1, body) if body else b""
    return out + field(FIELD_3, schema_url.encode()) if schema_url else out


# One fragment group: (resource head, scope head, serialized ``spans`` fields, span count).
Group = tuple[bytes, bytes, bytes, int]


def encode_groups(groups: Sequence[Group]) -> bytes:
    """An ExportTraceServiceRequest holding ``groups`` (one ResourceSpans per group)."""
    if len(groups) == 1:  # the common case: one trace's spans from one resource and scope
        rhead, shead, spans, _ = groups[0]
        return field(FIELD_1, rhead + field(FIELD_2, shead + spans))
    return b"".join(
        field(FIELD_1, rhead + field(FIELD_2, shead + spans)) for rhead, shead, spans, _ in groups
    )


def encode_tree(tree: dict[bytes, dict[bytes, list[bytes]]]) -> bytes:
    """An ExportTraceServiceRequest from resource head -> scope head -> serialized spans fields."""
    return b"".join(
        field(
            FIELD_1,
            rhead + b"".join(field(FIELD_2, shead + b"".join(spans)) for shead, spans in scopes.items()),
        )
        for rhead, scopes in tree.items()
    )


def decode_groups(data: bytes) -> tuple[list[Group], int]:
    """The groups of a serialized request (a reloaded fragment) and its span count."""
    request = ExportTraceServiceRequest.FromString(data)
    groups: list[Group] = []
    total = 0
    for rs in request.resource_spans:
        rhead = head(rs.resource, rs.schema_url)
        for ss in rs.scope_spans:
            spans = b"".join(field(FIELD_2, s.SerializeToString()) for s in ss.spans)
            groups.append((rhead, head(ss.scope, ss.schema_url), spans, len(ss.spans)))
            total += len(ss.spans)
    return groups, total


class Chunk:
    """Whole traces released together in one batch, regrouped as bytes."""

    __slots__ = ("first_seen", "spans", "tree")

    def __init__(self, first_seen: float) -> None:
        self.first_seen = first_seen
        self.spans = 0
        self.tree: dict[bytes, dict[bytes, list[bytes]]] = {}


class RequestBuilder:
    """Regroups spans into one request, keeping each span under its own Resource and Scope."""

    def __init__(self) -> None:
        self.request = ExportTraceServiceRequest()
        self._resources: dict[object, ResourceSpans] = {}
        self._scopes: dict[tuple[object, object], ScopeSpans] = {}
        self.count = 0

    def add(
        self, rkey: object, rs: ResourceSpans, skey: object, ss: ScopeSpans, spans: Iterable[Span]
    ) -> None:
        out_rs = self._resources.get(rkey)
        if out_rs is None:
            out_rs = self.request.resource_spans.add()
            out_rs.resource.CopyFrom(rs.resource)
            out_rs.schema_url = rs.schema_url
            self._resources[rkey] = out_rs
        out_ss = self._scopes.get((rkey, skey))
        if out_ss is None:
            out_ss = out_rs.scope_spans.add()
            out_ss.scope.CopyFrom(ss.scope)
            out_ss.schema_url = ss.schema_url
            self._scopes[(rkey, skey)] = out_ss
        before = len(out_ss.spans)
        out_ss.spans.extend(spans)
        self.count += len(out_ss.spans) - before

    def merge(self, request: ExportTraceServiceRequest) -> None:
        """Add a whole (parsed) request, merging equal resources/scopes by content."""
        for rs in request.resource_spans:
            rkey = (rs.resource.SerializeToString(deterministic=True), rs.schema_url)
            for ss in rs.scope_spans:
                skey = (ss.scope.SerializeToString(deterministic=True), ss.schema_url)
                self.add(rkey, rs, skey, ss, ss.spans)
