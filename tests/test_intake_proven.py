"""A request the intake proves valid from its bytes (``errorgate.intake.proof``) is never decoded
by the gateway: it is queued as received (no processors) or handed to the processor worker as
bytes. These tests run with the native prover and with an exact Python one (decode +
``validate_request``), so the gateway's side holds with and without the native build, and check what a user sees: content
downstream, what redact masked, counts that balance, and that refused bodies are still refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from errorgate.intake import proof
from errorgate.intake.proof import Proof
from errorgate.intake.validation import validate_request
from errorgate.receiver.config import ValidationConfig
from errorgate.service import gateway as gateway_module
from errorgate.signals import Signal, count_items
from tests.support.gateway import (
    final_metrics,
    gateway_yaml,
    metric_value,
    otlp_exporter_yaml,
    running_gateway,
)
from tests.support.otlp_sink import OtlpSink

METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}


class OracleProver:
    """Proves exactly what the Python validator accepts whole, and counts what it proved."""

    def __init__(self) -> None:
        self.proved = 0

    def __call__(self, signal: Signal, data: bytes, limits: ValidationConfig) -> Proof | None:
        request = signal.new_request()  # not ``Signal.parse``, which ParseCounter counts
        try:
            request.ParseFromString(data)
        except DecodeError:
            return None
        if data and not request.ListFields():
            return None
        rejections = validate_request(signal, request, limits, data)
        if rejections:
            return None
        self.proved += 1
        return Proof(count_items(request), request.SerializeToString() == data)


class ParseCounter:
    """Counts decodes of export requests in this process (the gateway's, not the worker's)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = Signal.parse

        def counting(signal: Signal, data: bytes) -> object:
            self.calls += 1
            return original(signal, data)

        monkeypatch.setattr(Signal, "parse", counting)


class NativeProver(OracleProver):
    """The real ``prove_valid``, counting what it proved."""

    def __call__(self, signal: Signal, data: bytes, limits: ValidationConfig) -> Proof | None:
        found = proof.prove_valid(signal, data, limits)
        self.proved += found is not None
        return found


@pytest.fixture(params=["oracle", "native"])
def prover(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> OracleProver:
    if request.param == "native" and not proof.NATIVE:
        pytest.skip("errorgate_native is not built (no cargo at make venv) or ERRORGATE_NATIVE=0")
    chosen = OracleProver() if request.param == "oracle" else NativeProver()
    monkeypatch.setattr(gateway_module, "prove_valid", chosen)
    return chosen


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _traces(trace_id: bytes = b"\x01" * 16) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "checkout"))
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, b"\x02" * 8, "POST /orders"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000, 2_000
    span.attributes.extend([_kv("user.email", "linda.thompson@example.org"), _kv("http.route", "/orders")])
    return req


def _logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(_kv("service.name", "checkout"))
    rec = rl.scope_logs.add().log_records.add()
    rec.time_unix_nano = 1_000
    rec.body.string_value = "receipt sent to linda.thompson@example.org for order 4411"
    return req


def _metrics() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name = "orders.placed"
    point = m.sum.data_points.add()
    point.as_int, point.time_unix_nano = 7, 1_000
    return req


def _send(endpoint: str, signal: Signal, body: bytes) -> bytes:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(METHODS[signal])
        return call(body, timeout=10)  # type: ignore[no-any-return]


def _config(tmp_path: Path, sink: OtlpSink) -> str:
    return gateway_yaml(
        tmp_path / "data",
        exporter=otlp_exporter_yaml(sink.grpc_endpoint),
        processors="{redact: {}}",
        pipeline_processors="[redact]",
        metrics_processors="[]",
    )


def test_proven_requests_are_never_decoded_by_the_gateway_and_arrive_redacted(
    tmp_path: Path, sink: OtlpSink, prover: OracleProver, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_gateway(_config(tmp_path, sink)) as gw:
        parses = ParseCounter(monkeypatch)  # after start-up: only what the requests cost
        bodies = {s: r.SerializeToString() for s, r in ((Signal.TRACES, _traces()), (Signal.LOGS, _logs()))}
        bodies[Signal.METRICS] = _metrics().SerializeToString()
        for signal, body in bodies.items():
            _send(gw.grpc_endpoint, signal, body)
        assert sink.wait_for(3)
        decoded_by_gateway = parses.calls
        text = final_metrics(gw)
    assert prover.proved == 3
    assert decoded_by_gateway == 0
    # redact ran in the worker on the bytes: the e-mail is masked, the route kept.
    (span,) = sink.spans()
    values = {kv.key: kv.value.string_value for kv in span.attributes}
    assert "linda.thompson@example.org" not in values["user.email"]
    assert values["http.route"] == "/orders"
    (record,) = sink.log_records()
    assert "linda.thompson@example.org" not in record.body.string_value
    assert "for order 4411" in record.body.string_value
    # No processors for metrics: the received bytes went downstream as they were.
    assert [r.request.SerializeToString() for r in sink if r.signal is Signal.METRICS] == [
        bodies[Signal.METRICS]
    ]
    for signal in Signal:
        received = metric_value(text, "errorgate_received_items_total", signal=signal.value)
        exported = metric_value(text, "errorgate_exported_items_total", signal=signal.value)
        assert received == exported == 1


def test_a_request_not_proven_is_validated_as_before(
    tmp_path: Path, sink: OtlpSink, prover: OracleProver
) -> None:
    bad = _traces(trace_id=bytes(16))  # all-zero trace id: rejected item, dead-lettered
    with running_gateway(_config(tmp_path, sink)) as gw:
        answer = _send(gw.grpc_endpoint, Signal.TRACES, bad.SerializeToString())
        text = final_metrics(gw)
    assert prover.proved == 0
    assert b"trace_id must not be all zeros" in answer
    assert metric_value(text, "errorgate_received_items_total", signal="traces") == 1
    assert metric_value(text, "errorgate_exported_items_total", signal="traces") == 0


def test_a_body_that_does_not_decode_is_refused_as_malformed(
    tmp_path: Path, sink: OtlpSink, prover: OracleProver
) -> None:
    with running_gateway(_config(tmp_path, sink)) as gw:
        with pytest.raises(grpc.RpcError) as refused:
            _send(gw.grpc_endpoint, Signal.TRACES, b"\x0a\x05\x0a\x03abc")  # a truncated resource entry
        text = final_metrics(gw)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode ExportTraceServiceRequest" in (refused.value.details() or "")
    assert metric_value(text, "errorgate_rejected_requests_total", reason="malformed") == 1
    assert metric_value(text, "errorgate_received_items_total", signal="traces") == 0
