"""The gateway's shortcuts on its own hot path give the same results as the long way round:
received bytes forwarded as they are only when nothing changed them, queued records served from
memory or disk alike, queued bytes parsed only when something needs the message, validation's
inline checks and item counts matching the thorough walk."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from errorgate.component import ComponentContext
from errorgate.delivery.diskqueue import PersistentQueue
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.delivery.exporter import QueuedExporter
from errorgate.exporters.otlp import OtlpExporter, OtlpExporterConfig
from errorgate.intake.validation import validate_request
from errorgate.otlp.flat import request_shape
from errorgate.otlp.json_format import to_json
from errorgate.receiver import ValidationConfig
from errorgate.signals import Batch, Signal, copy_request, count_items
from errorgate.telemetry import Telemetry
from tests.support.gateway import gateway_yaml, otlp_exporter_yaml, running_gateway
from tests.support.otlp_sink import OtlpSink, log_request, trace_request

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Field 15 (varint 7) is no OTLP field: kept as an unknown field by protobuf, and moved behind
# the known fields when a parsed request is serialized again — so re-encoded bytes differ.
UNKNOWN_FIELD = b"\x78\x07"


class RawSink:
    """A gRPC backend that keeps the exact bytes of every trace export it receives."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def export(body: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.bodies.append(body)
            return b""

        handler = grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
        service, method = TRACE_METHOD.lstrip("/").split("/")
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, {method: handler})]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            with self._lock:
                if len(self.bodies) >= n:
                    return list(self.bodies)
            deadline.wait(0.05)
        with self._lock:
            return list(self.bodies)

    def stop(self) -> None:
        self._server.stop(0)


@pytest.fixture
def raw_sink() -> Iterator[RawSink]:
    s = RawSink()
    yield s
    s.stop()


def _send_grpc(endpoint: str, body: bytes) -> bytes:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            TRACE_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        return bytes(call(body, timeout=10))


@pytest.mark.parametrize("persistent", [True, False])
def test_untouched_request_goes_out_byte_for_byte(
    raw_sink: RawSink, tmp_path: Path, persistent: bool
) -> None:
    body = UNKNOWN_FIELD + trace_request(3).SerializeToString()
    assert ExportTraceServiceRequest.FromString(body).SerializeToString() != body  # re-encoding would show
    exporter = otlp_exporter_yaml(
        f"127.0.0.1:{raw_sink.port}", queue_dir=tmp_path / "q" if persistent else None
    )
    with running_gateway(gateway_yaml(tmp_path / "data", exporter=exporter)) as gw:
        _send_grpc(gw.grpc_endpoint, body)
        assert raw_sink.wait_for(1) == [body]


def test_request_changed_by_validation_goes_out_re_encoded(raw_sink: RawSink, tmp_path: Path) -> None:
    req = trace_request(3)
    req.resource_spans[0].scope_spans[0].spans[1].trace_id = b"short"
    body = UNKNOWN_FIELD + req.SerializeToString()
    with running_gateway(
        gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(f"127.0.0.1:{raw_sink.port}"))
    ) as gw:
        _send_grpc(gw.grpc_endpoint, body)
        [out] = raw_sink.wait_for(1)
    got = ExportTraceServiceRequest.FromString(out)
    assert [s.name for s in got.resource_spans[0].scope_spans[0].spans] == ["op-0", "op-2"]


def test_processors_in_the_pipeline_get_their_changes_exported(raw_sink: RawSink, tmp_path: Path) -> None:
    body = UNKNOWN_FIELD + trace_request(2).SerializeToString()
    cfg = gateway_yaml(
        tmp_path / "data",
        exporter=otlp_exporter_yaml(f"127.0.0.1:{raw_sink.port}"),
        processors="{retention: {}}",
        pipeline_processors="[retention]",
    )
    with running_gateway(cfg) as gw:
        _send_grpc(gw.grpc_endpoint, body)
        [out] = raw_sink.wait_for(1)
    spans = ExportTraceServiceRequest.FromString(out).resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["op-0", "op-1"]
    # retention labels every span: the exported bytes carry the processor's work, not the received body
    assert all(any(kv.key == "errorgate.retention.class" for kv in s.attributes) for s in spans)


def test_json_body_is_exported_as_protobuf(raw_sink: RawSink, tmp_path: Path) -> None:
    sent = trace_request(2)
    json_body = to_json(sent).encode()
    with running_gateway(
        gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(f"127.0.0.1:{raw_sink.port}"))
    ) as gw:
        post = urllib.request.Request(
            f"http://{gw.http_endpoint}/v1/traces",
            data=json_body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(post, timeout=10) as response:
            assert response.status == 200
            json.loads(response.read() or b"{}")
        [out] = raw_sink.wait_for(1)
    assert out != json_body
    assert ExportTraceServiceRequest.FromString(out) == sent


def test_records_beyond_the_memory_bound_are_read_back_from_disk(tmp_path: Path) -> None:
    # 64 KiB queue: at most 16 KiB of recently written records stay in memory, the rest is read from disk.
    q = PersistentQueue(tmp_path, max_bytes=64 * 1024, segment_bytes=4096)
    sent = [log_request(5, body=f"batch{b}-" + "x" * 300, start=b * 5) for b in range(30)]
    for req in sent:
        q.put(Signal.LOGS, req, 5)
    assert 0 < q._recent_bytes <= q._recent_max < sum(r.ByteSize() for r in sent)
    got = []
    for _ in sent:
        rec = q.get(timeout=1)
        assert rec is not None and not rec.corrupt
        got.append(rec.to_request())
        q.ack(rec.seq)
    assert got == sent
    assert (q.items, q.nbytes, len(q), q._recent_bytes) == (0, 0, 0, 0)
    q.close()
    # What came from memory was on disk all along: a restart before the acks would replay it all.
    q2 = PersistentQueue(tmp_path, max_bytes=64 * 1024, segment_bytes=4096)
    assert len(q2) == 0
    q2.close()


def test_records_served_from_memory_survive_a_restart_unacknowledged(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, max_bytes=1048576)
    sent = [trace_request(2, start=2 * i) for i in range(4)]
    for req in sent:
        q.put(Signal.TRACES, req, 2, req.SerializeToString())
    recs = [q.get(timeout=1) for _ in sent]
    assert [r.to_request() for r in recs if r] == sent
    q.close()  # nothing acknowledged
    q2 = PersistentQueue(tmp_path, max_bytes=1048576)
    again = [q2.get(timeout=1) for _ in sent]
    assert [r.to_request() for r in again if r] == sent
    q2.close()


class _Harness:
    def __init__(self, tmp_path: Path, sink: OtlpSink, start: bool = True, batching: bool = True) -> None:
        self.telemetry = Telemetry()
        self.dlq = DeadLetterStore(tmp_path / "dlq", self.telemetry)
        config = OtlpExporterConfig.model_validate(
            {
                "endpoint": sink.grpc_endpoint,
                "tls": {"insecure": True},
                "timeout": "2s",
                "sending_queue": {
                    "storage": str(tmp_path / "queue"),
                    "num_consumers": 1,
                    "batch": {"enabled": batching},
                },
            }
        )
        context = ComponentContext("otlp", tmp_path, self.telemetry, logging.getLogger("test"))
        self.qe = QueuedExporter("otlp", OtlpExporter(config, context), config, context, self.dlq)
        if start:
            self.qe.start()

    def metric(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(name, labels) or 0.0


def test_bytes_only_exporter_dead_letters_the_decoded_request(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        # Batching off: the refusal must meet the first batch alone.
        h = _Harness(tmp_path, sink, batching=False)
        sink.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
        bad, good = log_request(4), log_request(2, start=4)
        h.qe.enqueue(Batch.of(copy_request(bad)))
        h.qe.enqueue(Batch.of(copy_request(good)))
        assert h.qe.drain(10)
        h.qe.shutdown()
        [entry] = h.dlq.list()
        assert (entry.reason, entry.items) == ("permanent_export_error", 4)
        assert h.dlq.load(entry.id) == (Signal.LOGS, bad)
        assert [r.body.string_value for r in sink.log_records()] == ["line-4", "line-5"]
        assert h.metric("errorgate_exported_items_total", signal="logs", exporter="otlp") == 2
        assert (
            h.metric("errorgate_dead_lettered_items_total", signal="logs", reason="permanent_export_error")
            == 4
        )


def test_a_batch_from_the_processor_worker_is_queued_and_exported_without_being_parsed(
    tmp_path: Path,
) -> None:
    """Results come back from the worker as bytes: the persistent queue writes them as they
    are, the exporter sends them as they are, and the gateway never builds the request."""
    from errorgate.delivery.exporter import SerializedBatch

    with OtlpSink() as sink:
        h = _Harness(tmp_path, sink)
        sent = log_request(3)
        batch = SerializedBatch(Signal.LOGS, sent.SerializeToString(), 3)
        h.qe.enqueue(batch)
        assert batch.parsed_request() is None
        assert h.qe.drain(10)
        h.qe.shutdown()
        assert batch.parsed_request() is None
        assert [r.body.string_value for r in sink.log_records()] == ["line-0", "line-1", "line-2"]


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def test_nested_values_are_found_wherever_they_are() -> None:
    flat = trace_request(3)
    assert not request_shape(Signal.TRACES, flat.SerializeToString()).nested
    in_span = copy_request(flat)
    in_span.resource_spans[0].scope_spans[0].spans[2].attributes.append(
        _kv("tags", AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a")])))
    )
    assert request_shape(Signal.TRACES, in_span.SerializeToString()).nested
    in_resource = copy_request(flat)
    in_resource.resource_spans[0].resource.attributes.append(
        _kv("empty", AnyValue(kvlist_value=KeyValueList()))
    )
    assert request_shape(Signal.TRACES, in_resource.SerializeToString()).nested
    logs = log_request(2)
    assert not request_shape(Signal.LOGS, logs.SerializeToString()).nested
    logs.resource_logs[0].scope_logs[0].log_records[1].body.CopyFrom(AnyValue(array_value=ArrayValue()))
    assert request_shape(Signal.LOGS, logs.SerializeToString()).nested


def _deep(depth: int) -> AnyValue:
    value = AnyValue(string_value="leaf")
    for _ in range(depth):
        value = AnyValue(array_value=ArrayValue(values=[value]))
    return value


def test_request_shape_tells_nested_values_and_links_apart() -> None:
    """One pass answers "neither" for the usual request; otherwise each is told apart, so a
    request with links keeps the no-nesting fast path and one with nesting keeps the no-links one."""

    def shape(signal: Signal, request: Any) -> tuple[bool, bool]:
        return request_shape(signal, request.SerializeToString())[:2]

    plain = trace_request(4)
    assert shape(Signal.TRACES, plain) == (False, False)
    linked = copy_request(plain)
    linked.resource_spans[0].scope_spans[0].spans[3].links.add(trace_id=bytes(range(16)), span_id=b"12345678")
    assert shape(Signal.TRACES, linked) == (False, True)
    nested = copy_request(plain)
    nested.resource_spans[0].scope_spans[0].spans[1].attributes.append(_kv("d", _deep(1)))
    assert shape(Signal.TRACES, nested) == (True, False)
    both = copy_request(linked)
    both.resource_spans[0].scope_spans[0].spans[1].attributes.append(_kv("d", _deep(1)))
    assert shape(Signal.TRACES, both) == (True, True)
    empty_link = copy_request(plain)  # a link with no field set still is a link
    empty_link.resource_spans[0].scope_spans[0].spans[0].links.add()
    assert shape(Signal.TRACES, empty_link) == (False, True)
    assert shape(Signal.LOGS, log_request(2)) == (False, False)
    assert request_shape(Signal.TRACES, b"\xff\xff")[:2] == (True, True)  # undecodable: check all


def test_received_bytes_stand_for_the_request_only_when_serializing_gives_them() -> None:
    """The processors after intake may get the received body instead of a fresh serialization
    only when the two are the same bytes: not for fields out of order, an over-long varint or
    an unknown field where upb would not put it (byte-level readers assume upb's layout)."""

    def request_of(span_bytes: bytes) -> bytes:  # one resource, one scope, one span
        def field(tag: int, body: bytes) -> bytes:
            assert len(body) < 128
            return bytes([tag, len(body)]) + body

        return field(0x0A, field(0x12, field(0x12, span_bytes)))

    span = Span(name="x", trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), kind=2)
    canonical = span.SerializeToString()
    assert (
        request_of(canonical)
        == ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
        ).SerializeToString()
    )
    assert request_shape(Signal.TRACES, request_of(canonical)).canonical
    odd = {
        "span_id before trace_id": canonical[18:28] + canonical[:18] + canonical[28:],
        "kind in a two-byte varint": canonical.replace(b"\x30\x02", b"\x30\x82\x00"),
        # Field 127 (varint 1) first: upb keeps unknown fields, but serializes them last.
        "an unknown field ahead of the known ones": b"\xf8\x07\x01" + canonical,
    }
    for what, span_bytes in odd.items():
        request = ExportTraceServiceRequest.FromString(request_of(span_bytes))
        assert request.resource_spans[0].scope_spans[0].spans[0].name == "x", what
        assert not request_shape(Signal.TRACES, request_of(span_bytes)).canonical, what
        assert not validate_request(
            Signal.TRACES, request, ValidationConfig(), request_of(span_bytes)
        ).canonical
    data = trace_request(2).SerializeToString()
    assert validate_request(Signal.TRACES, trace_request(2), ValidationConfig(), data).canonical
    assert not validate_request(Signal.TRACES, trace_request(2), ValidationConfig()).canonical  # no body


def test_a_bad_link_in_an_otherwise_flat_request_is_rejected() -> None:
    """The no-links shortcut must not skip a request that has one: without nesting, the span
    with a bad link is the only one rejected, by the inline check's fallback."""
    req = trace_request(6)
    req.resource_spans[0].scope_spans[0].spans[4].links.add(trace_id=b"short", span_id=bytes(8))
    work = copy_request(req)
    rejections = validate_request(Signal.TRACES, work, ValidationConfig(), req.SerializeToString())
    assert (rejections.count, rejections.kept) == (1, 5)
    assert rejections.message() == "rejected 1 spans: link trace_id must be 16 bytes (got 5) x1"


def test_validation_inline_checks_reject_what_the_full_walk_rejects() -> None:
    req = trace_request(8)
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = bytes(16)
    spans[1].span_id = b"1234"
    spans[2].parent_span_id = b"123"
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1
    spans[4].links.add(trace_id=b"x", span_id=bytes(8))
    spans[5].attributes.append(_kv("deep", _deep(9)))  # nested: the whole request takes the full walk
    limits = ValidationConfig()
    for raw in (None, req.SerializeToString()):
        work = copy_request(req)
        rejections = validate_request(Signal.TRACES, work, limits, raw)
        assert rejections.count == 6 and rejections.examined == 8
        assert rejections.kept == count_items(work) == 2
        assert [s.name for s in work.resource_spans[0].scope_spans[0].spans] == ["op-6", "op-7"]
        assert sum(rejections.reasons.values()) == 6


def test_validation_long_string_in_a_small_resource_is_still_caught() -> None:
    req = trace_request(2)
    req.resource_spans.add().CopyFrom(trace_request(2, start=2).resource_spans[0])
    req.resource_spans[1].scope_spans[0].spans[0].attributes.append(
        _kv("blob", AnyValue(string_value="y" * 300))
    )
    limits = ValidationConfig(max_string_length=256)
    rejections = validate_request(Signal.TRACES, req, limits, req.SerializeToString())
    assert (rejections.count, rejections.kept, count_items(req)) == (1, 3, 3)
    assert "string longer than 256 bytes" in rejections.message()


def _backlog_harness(tmp_path: Path, sink: OtlpSink, sent: list[tuple[Signal, object]]) -> _Harness:
    """A persistent queue holding ``sent`` before any consumer runs (a backlog, as after an outage)."""
    h = _Harness(tmp_path, sink, start=False)
    for _signal, req in sent:
        h.qe.enqueue(Batch.of(copy_request(req)))  # type: ignore[arg-type]
    h.qe.start()
    return h


def test_backlog_goes_out_merged_with_every_item_once_in_order(tmp_path: Path) -> None:
    sent: list[tuple[Signal, object]] = []
    for b in range(30):
        sent.append((Signal.TRACES, trace_request(3, start=3 * b)))
        if b % 10 == 9:
            sent.append((Signal.LOGS, log_request(2, start=b)))
    with OtlpSink() as sink:
        h = _backlog_harness(tmp_path, sink, sent)
        assert h.qe.drain(20)
        h.qe.shutdown()
        assert len(sink.requests) < len(sent)  # merged: fewer calls than queued batches
        assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(90)]
        assert [r.body.string_value for r in sink.log_records()] == [
            "line-9",
            "line-10",
            "line-19",
            "line-20",
            "line-29",
            "line-30",
        ]
        assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 90
        assert h.metric("errorgate_exported_items_total", signal="logs", exporter="otlp") == 6
        assert h.dlq.list() == []


def test_refused_merged_request_is_retried_record_by_record(tmp_path: Path) -> None:
    sent: list[tuple[Signal, object]] = [(Signal.TRACES, trace_request(2, start=2 * b)) for b in range(12)]
    with OtlpSink() as sink:
        sink.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
        h = _backlog_harness(tmp_path, sink, sent)
        assert h.qe.drain(20)
        h.qe.shutdown()
        # The refusal hit the merged request; one by one, every batch was then accepted.
        assert sink.failed_calls["grpc"] == 1 and h.dlq.list() == []
        assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(24)]
        assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 24
        assert (
            h.metric("errorgate_dead_lettered_items_total", signal="traces", reason="permanent_export_error")
            == 0
        )


def test_partial_success_on_a_merged_request_balances(tmp_path: Path) -> None:
    sent: list[tuple[Signal, object]] = [(Signal.LOGS, log_request(5, start=5 * b)) for b in range(10)]
    with OtlpSink() as sink:
        sink.reject_next(1, rejected=3)
        h = _backlog_harness(tmp_path, sink, sent)
        assert h.qe.drain(20)
        h.qe.shutdown()
        exported = h.metric("errorgate_exported_items_total", signal="logs", exporter="otlp")
        dropped = h.metric("errorgate_dropped_items_total", signal="logs", reason="rejected_by_backend")
        assert (exported, dropped) == (47, 3)
