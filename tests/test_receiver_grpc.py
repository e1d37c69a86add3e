"""OTLP/gRPC receiver with the real OpenTelemetry SDK exporters and raw gRPC clients on loopback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from errorgate.config import AuthConfig, ConfigError, TLSServerConfig
from errorgate.intake.contract import AcceptResult
from errorgate.receiver import GrpcProtocolConfig
from errorgate.receiver.grpc_server import OtlpGrpcReceiver
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.certs import Pki, make_pki
from tests.support.receiver_kit import (
    RecordingIntake,
    backpressure,
    invalid_request,
    processing_failed,
    received_log_view,
    received_metric_view,
    received_span_view,
    sdk_log_view,
    sdk_logs,
    sdk_metrics,
    sdk_spans,
    span_view,
)

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOG = logging.getLogger("test.receiver.grpc")
TOKEN = "s3cret-token-for-tests"


class Gateway:
    def __init__(self, receiver: OtlpGrpcReceiver, intake: RecordingIntake, telemetry: Telemetry) -> None:
        self.receiver = receiver
        self.intake = intake
        self.telemetry = telemetry
        self.port = receiver.start()
        self.endpoint = f"127.0.0.1:{self.port}"

    def refused(self, reason: str) -> float:
        value = self.telemetry.registry.get_sample_value(
            "errorgate_rejected_requests_total", {"receiver": "otlp", "reason": reason}
        )
        return value or 0.0

    def raw_export(self, data: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
        with grpc.insecure_channel(self.endpoint) as channel:
            call = channel.unary_unary(TRACE_EXPORT, request_serializer=None, response_deserializer=None)
            return call(data, metadata=metadata, timeout=10)  # type: ignore[no-any-return]


def _start(config: GrpcProtocolConfig, auth: AuthConfig | None = None) -> Gateway:
    intake, telemetry = RecordingIntake(), Telemetry()
    return Gateway(OtlpGrpcReceiver("otlp", config, auth, intake, LOG, telemetry), intake, telemetry)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    g = _start(GrpcProtocolConfig(endpoint="127.0.0.1:0", max_recv_msg_size_mib=0.05))
    yield g
    g.receiver.stop(1.0)


def _valid_trace_request() -> trace_service_pb2.ExportTraceServiceRequest:
    return encode_spans(sdk_spans())


def test_sdk_traces_logs_metrics_arrive_intact(gw: Gateway) -> None:
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=gw.endpoint, insecure=True, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert received_span_view(gw.intake) == span_view(spans)

    logs = sdk_logs()
    log_exporter = OTLPLogExporter(endpoint=gw.endpoint, insecure=True, timeout=10)
    assert log_exporter.export(logs) == LogRecordExportResult.SUCCESS
    log_exporter.shutdown()
    assert received_log_view(gw.intake) == sdk_log_view(logs)

    metric_exporter = OTLPMetricExporter(endpoint=gw.endpoint, insecure=True, timeout=10)
    assert metric_exporter.export(sdk_metrics()) == MetricExportResult.SUCCESS
    metric_exporter.shutdown()
    assert received_metric_view(gw.intake) == {
        ("http.server.requests", "/cart"): 5,
        ("http.server.requests", "/pay"): 2,
        ("http.server.duration", "/cart"): (3, 265.0),
    }
    # the undecoded body is handed over for duplicate detection, and the receiver id
    accepted = gw.intake.accepted[0]
    assert accepted.receiver == "otlp"
    assert accepted.raw == accepted.request.SerializeToString()
    assert [a.signal for a in gw.intake.accepted] == [Signal.TRACES, Signal.LOGS, Signal.METRICS]


def test_gzip_compressed_requests(gw: Gateway) -> None:
    spans = sdk_spans(n_children=20)
    exporter = OTLPSpanExporter(
        endpoint=gw.endpoint, insecure=True, compression=grpc.Compression.Gzip, timeout=10
    )
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert received_span_view(gw.intake) == span_view(spans)


def test_partial_success_is_reported_back(gw: Gateway) -> None:
    gw.intake.result = AcceptResult(
        rejected_items=2, error_message="rejected 2 spans: end_time before start_time x2"
    )
    with grpc.insecure_channel(gw.endpoint) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(_valid_trace_request(), timeout=10)
        assert response.partial_success.rejected_spans == 2
        assert response.partial_success.error_message == "rejected 2 spans: end_time before start_time x2"
        logs_resp = logs_service_pb2_grpc.LogsServiceStub(channel).Export(encode_logs(sdk_logs()), timeout=10)
        assert logs_resp.partial_success.rejected_log_records == 2
        metrics_resp = metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(
            encode_metrics(sdk_metrics()),
            timeout=10,
        )
        assert metrics_resp.partial_success.rejected_data_points == 2
    gw.intake.result = AcceptResult()
    with grpc.insecure_channel(gw.endpoint) as channel:
        response = trace_service_pb2_grpc.TraceServiceStub(channel).Export(_valid_trace_request(), timeout=10)
    assert not response.HasField("partial_success")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xff\xff\xff this is not protobuf", id="garbage"),
        pytest.param(_valid_trace_request().SerializeToString()[:-7], id="truncated"),
        pytest.param(b"\x52\x03abc", id="unknown-fields-only"),
    ],
)
def test_malformed_bodies_get_invalid_argument_and_server_keeps_serving(gw: Gateway, body: bytes) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        gw.raw_export(body)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("cannot decode ExportTraceServiceRequest: ")
    assert "not protobuf" not in exc.value.details()
    assert gw.intake.accepted == []
    assert gw.refused("malformed") == 1
    gw.raw_export(_valid_trace_request().SerializeToString())
    assert len(gw.intake.accepted) == 1


def test_oversize_requests_get_resource_exhausted_with_the_limit(gw: Gateway) -> None:
    limit = int(0.05 * 1024 * 1024)
    request = _valid_trace_request()
    request.resource_spans[0].scope_spans[0].spans[0].name = "x" * (limit + 10)
    with pytest.raises(grpc.RpcError) as exc:
        gw.raw_export(request.SerializeToString())
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"over the limit of {limit} bytes (max_recv_msg_size_mib=0.05)" in exc.value.details()
    assert gw.refused("too_large") == 1
    # far beyond the limit grpc itself refuses before the handler runs; the status is the same
    with pytest.raises(grpc.RpcError) as exc:
        gw.raw_export(b"\x0a" + b"\x00" * (6 * 1024 * 1024))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert gw.intake.accepted == []
    gw.raw_export(_valid_trace_request().SerializeToString())
    assert len(gw.intake.accepted) == 1


def test_gzip_bomb_is_limited_by_decompressed_size(gw: Gateway) -> None:
    request = _valid_trace_request()
    request.resource_spans[0].scope_spans[0].spans[0].name = "a" * (8 * 1024 * 1024)
    with (
        grpc.insecure_channel(gw.endpoint, compression=grpc.Compression.Gzip) as channel,
        pytest.raises(grpc.RpcError) as exc,
    ):
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert gw.intake.accepted == []


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (processing_failed, grpc.StatusCode.INTERNAL, "processing_failed"),
        (invalid_request, grpc.StatusCode.INVALID_ARGUMENT, "malformed"),
        (lambda: RuntimeError("value 4111111111111111 broke it"), grpc.StatusCode.INTERNAL, "internal"),
    ],
)
def test_intake_errors_map_to_status_codes(
    gw: Gateway, error: object, code: grpc.StatusCode, reason: str
) -> None:
    gw.intake.raise_next.append(error())  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as exc:
        gw.raw_export(_valid_trace_request().SerializeToString())
    assert exc.value.code() == code
    assert "4111111111111111" not in exc.value.details()
    assert gw.refused(reason) == 1
    gw.raw_export(_valid_trace_request().SerializeToString())
    assert len(gw.intake.accepted) == 1


def test_backpressure_is_unavailable_with_retry_info(gw: Gateway) -> None:
    gw.intake.raise_next.append(backpressure(retry_after=3.5))
    with pytest.raises(grpc.RpcError) as exc:
        gw.raw_export(_valid_trace_request().SerializeToString())
    err = exc.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(err.trailing_metadata())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (3, 500_000_000)
    assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == retry
    assert gw.refused("backpressure") == 1


def test_sdk_exporter_retries_after_backpressure_and_delivers(gw: Gateway) -> None:
    gw.intake.raise_next.append(backpressure(retry_after=0.1))
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=gw.endpoint, insecure=True, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert received_span_view(gw.intake) == span_view(spans)
    assert gw.refused("backpressure") == 1


def test_health_follows_intake_readiness(gw: Gateway) -> None:
    with grpc.insecure_channel(gw.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "opentelemetry.proto.collector.trace.v1.TraceService"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        gw.intake.ready = "warn"
        assert (
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        gw.intake.ready = "fail"
        resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        gw.intake.ready = "pass"
        assert (
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.SERVING
        )


# ---------------------------------------------------------------- auth


def test_bearer_auth(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# rotated 2026-11\nold-token\n{TOKEN}\n")
    tokens.chmod(0o600)
    g = _start(GrpcProtocolConfig(endpoint="127.0.0.1:0"), AuthConfig(bearer_tokens_file=str(tokens)))
    try:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            exporter = OTLPSpanExporter(endpoint=g.endpoint, insecure=True, headers=headers, timeout=5)
            assert exporter.export(sdk_spans()) == SpanExportResult.FAILURE
            exporter.shutdown()
        with pytest.raises(grpc.RpcError) as exc:
            g.raw_export(_valid_trace_request().SerializeToString(), (("authorization", "Bearer nope"),))
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert g.intake.accepted == []
        assert g.refused("unauthenticated") == 4
        for token in ("old-token", TOKEN):
            spans = sdk_spans()
            exporter = OTLPSpanExporter(
                endpoint=g.endpoint, insecure=True, headers={"authorization": f"Bearer {token}"}, timeout=5
            )
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            exporter.shutdown()
        assert len(g.intake.accepted) == 2
    finally:
        g.receiver.stop(1.0)


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_exporter(port: int, pki: Pki, client_cert: bool) -> OTLPSpanExporter:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None,
    )
    return OTLPSpanExporter(endpoint=f"localhost:{port}", credentials=creds, timeout=5)


def test_tls_and_mtls(pki: Pki) -> None:
    tls = TLSServerConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
    g = _start(GrpcProtocolConfig(endpoint="127.0.0.1:0", tls=tls))
    try:
        spans = sdk_spans()
        exporter = _tls_exporter(g.port, pki, client_cert=False)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(g.intake) == span_view(spans)
        # a plaintext client cannot talk to the TLS port
        with pytest.raises(grpc.RpcError):
            g.raw_export(_valid_trace_request().SerializeToString())
    finally:
        g.receiver.stop(1.0)

    mtls = TLSServerConfig(
        cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca_cert)
    )
    g = _start(GrpcProtocolConfig(endpoint="127.0.0.1:0", tls=mtls))
    try:
        exporter = _tls_exporter(g.port, pki, client_cert=False)
        assert exporter.export(sdk_spans()) == SpanExportResult.FAILURE
        exporter.shutdown()
        assert g.intake.accepted == []
        spans = sdk_spans()
        exporter = _tls_exporter(g.port, pki, client_cert=True)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(g.intake) == span_view(spans)
    finally:
        g.receiver.stop(1.0)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    missing = TLSServerConfig(cert_file=str(tmp_path / "nope.pem"), key_file=str(tmp_path / "nope-key.pem"))
    receiver = OtlpGrpcReceiver(
        "otlp/edge",
        GrpcProtocolConfig(endpoint="127.0.0.1:0", tls=missing),
        None,
        RecordingIntake(),
        LOG,
        Telemetry(),
    )
    with pytest.raises(ConfigError, match=r"receivers\.otlp/edge\.protocols\.grpc\.tls\.key_file"):
        receiver.start()
    with pytest.raises(ConfigError, match=r"receivers\.otlp\.protocols\.grpc\.endpoint: expected host:port"):
        OtlpGrpcReceiver(
            "otlp", GrpcProtocolConfig(endpoint="localhost"), None, RecordingIntake(), LOG, Telemetry()
        )


def test_handler_threads_are_few_and_bounded_by_the_stream_limit() -> None:
    from errorgate.receiver.grpc_server import handler_threads

    assert handler_threads(1) == 4  # never fewer than 4
    assert 4 <= handler_threads(64) <= max(4, 2 * (os.cpu_count() or 1))
    assert handler_threads(10_000) < 10_000  # not one thread per allowed stream
