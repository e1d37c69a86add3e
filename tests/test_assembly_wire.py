"""The assembler's wire scan: every span's trace found from the bytes, exactly as a parser sees it,
for upb's own output and for encodings a sender might produce (any field order, unknown fields,
repeated ``trace_id``), and regrouped runs parse back to the same spans."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.otlp.flat import scope_items
from errorgate.pipeline.assembly import wire


def _spans(request: ExportTraceServiceRequest) -> list[tuple[bytes, bytes]]:
    return [
        (s.trace_id, s.SerializeToString())
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def _scanned(data: bytes) -> list[tuple[bytes, bytes]]:
    """(trace id, span) of every span the scan found, by parsing each run on its own."""
    out = []
    for rhead, shead, runs in wire.scan(data):
        for tid, start, end, count in runs:
            tree: wire.Tree = {}
            wire.add(tree, rhead, shead, data[start:end])
            part = ExportTraceServiceRequest.FromString(wire.encode_tree(tree))
            spans = _spans(part)
            assert len(spans) == count
            assert all(t == tid for t, _ in spans)
            out += spans
    return out


def _random_request(rng: random.Random) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(rng.randint(0, 4)):
        rs = req.resource_spans.add()
        if rng.random() < 0.8:
            rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=f"s{r}")))
        if rng.random() < 0.3:
            rs.schema_url = "https://schema/1"
        for _ in range(rng.randint(0, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name = rng.choice(["", "lib", "db"])
            for _ in range(rng.randint(0, 8)):
                span = ss.spans.add(name="x" * rng.choice([0, 3, 200, 20000]))
                span.trace_id = rng.choice(
                    [b"", bytes(16), rng.randbytes(16), rng.randbytes(5), b"\x01" * 16]
                )
                if rng.random() < 0.5:
                    span.span_id = rng.randbytes(8)
    return req


@pytest.mark.parametrize("seed", range(40))
def test_scan_finds_every_span_and_its_trace(seed: int) -> None:
    req = _random_request(random.Random(seed))
    data = req.SerializeToString()
    assert _scanned(data) == _spans(req)


def test_runs_join_consecutive_spans_of_one_trace() -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    a, b = b"\x0a" * 16, b"\x0b" * 16
    for tid in (a, a, b, a):
        ss.spans.add(trace_id=tid, name="op")
    [(_, _, runs)] = wire.scan(req.SerializeToString())
    assert [(tid, count) for tid, _, _, count in runs] == [(a, 2), (b, 1), (a, 1)]


def _field(tag: int, body: bytes) -> bytes:
    return wire.varint(tag) + wire.varint(len(body)) + body


def test_hand_made_encodings_are_read_as_a_parser_reads_them() -> None:
    first, last = b"\x01" * 16, b"\x02" * 16
    span_body = (
        _field(0x2A, b"op")  # name before trace_id
        + _field(0x0A, first)
        + bytes([0xA0, 0x06, 0x05])  # an unknown varint field
        + _field(0x0A, last)  # trace_id again: the last one wins
    )
    odd_group = bytes([0xA3, 0x06]) + bytes([0x08, 0x01]) + bytes([0xA4, 0x06])  # unknown group in the scope
    scope = _field(0x12, span_body) + odd_group + _field(0x0A, _field(0x0A, b"lib"))  # spans before scope
    resource = _field(0x12, scope) + _field(0x1A, b"https://schema")  # no resource, schema after spans
    data = _field(0x0A, resource) + bytes([0x10, 0x07])  # and an unknown varint field in the request
    parsed = ExportTraceServiceRequest.FromString(data)
    assert parsed.resource_spans[0].scope_spans[0].spans[0].trace_id == last
    assert _scanned(data) == _spans(parsed)
    [(rhead, shead, _)] = wire.scan(data)
    assert shead.endswith(_field(0x0A, _field(0x0A, b"lib")))
    assert rhead == _field(0x1A, b"https://schema")


@pytest.mark.parametrize("cut", range(1, 28))
def test_truncated_bytes_raise_wire_error(cut: int) -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, name="op")
    data = req.SerializeToString()
    assert len(data) > cut
    with pytest.raises(wire.WireError):
        wire.scan(data[: len(data) - cut])


def test_upb_output_puts_trace_id_first() -> None:
    """The fast path's premise (if it ever fails, the scan is still exact, only slower)."""
    span = Span(name="op", kind=Span.SPAN_KIND_SERVER, span_id=b"\x02" * 8, trace_id=b"\x01" * 16)
    span.attributes.append(KeyValue(key="k", value=AnyValue(int_value=1)))
    assert span.SerializeToString()[:2] == b"\x0a\x10"


def test_varints_match_protobuf() -> None:
    from google.protobuf.internal.encoder import _VarintBytes

    for n in [*range(0, 20000, 7), 2**14 - 1, 2**14, 2**21, 2**35 + 5]:
        assert wire.varint(n) == _VarintBytes(n)


def _bounded(data: bytes) -> list[list[bytes]]:
    items = scope_items(data)
    assert items is not None
    return [list(scope) for scope in items]


@pytest.mark.parametrize("seed", range(40))
def test_scope_items_are_each_span_as_it_serializes(seed: int) -> None:
    """``classify`` reads spans from these bytes: each must be exactly the span's own encoding."""
    req = _random_request(random.Random(seed))
    data = req.SerializeToString()
    parsed = ExportTraceServiceRequest.FromString(data)
    expected = [
        [s.SerializeToString() for s in ss.spans] for rs in parsed.resource_spans for ss in rs.scope_spans
    ]
    assert _bounded(data) == expected


def test_scope_items_follow_a_parser_on_hand_made_encodings() -> None:
    span = _field(0x2A, b"op")
    # A span whose tag is an overlong varint (0x92 0x00 is field 2 too), unknown fields around.
    scope = _field(0x12, span) + bytes([0x92, 0x00, 0x00]) + bytes([0xA0, 0x06, 0x05]) + _field(0x12, span)
    data = _field(0x0A, bytes([0x08, 0x01]) + _field(0x12, scope) + _field(0x12, b"")) + bytes([0x10, 0x07])
    parsed = ExportTraceServiceRequest.FromString(data)
    counts = [len(ss.spans) for rs in parsed.resource_spans for ss in rs.scope_spans]
    assert counts == [3, 0]
    assert _bounded(data) == [[span, b"", span], []]


@pytest.mark.parametrize("cut", range(1, 20))
def test_scope_items_of_truncated_bytes_are_none(cut: int) -> None:
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, name="op")
    data = req.SerializeToString()
    assert scope_items(data[: len(data) - cut]) is None
