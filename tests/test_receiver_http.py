"""OTLP/HTTP receiver with the real OpenTelemetry SDK HTTP exporters and plain HTTP clients on loopback."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import zstandard
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.trace.export import SpanExportResult

from errorgate.config import AuthConfig, TLSServerConfig
from errorgate.intake.contract import AcceptResult
from errorgate.otlp.json_format import to_json
from errorgate.receiver import HttpProtocolConfig
from errorgate.receiver.http_server import OtlpHttpReceiver
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.certs import Pki, make_pki
from tests.support.receiver_kit import (
    RecordingIntake,
    backpressure,
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

LOG = logging.getLogger("test.receiver.http")
LIMIT_MIB = 0.05
LIMIT = int(LIMIT_MIB * 1024 * 1024)
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


class Gateway:
    def __init__(self, receiver: OtlpHttpReceiver, intake: RecordingIntake, telemetry: Telemetry) -> None:
        self.receiver = receiver
        self.intake = intake
        self.telemetry = telemetry
        self.port = receiver.start()
        self.base = f"http://127.0.0.1:{self.port}"

    def refused(self, reason: str) -> float:
        value = self.telemetry.registry.get_sample_value(
            "errorgate_rejected_requests_total", {"receiver": "otlp", "reason": reason}
        )
        return value or 0.0

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(self.base + path, data=body, headers=headers, timeout=10)

    def still_serving(self) -> None:
        before = len(self.intake.accepted)
        resp = self.post("/v1/traces", encode_spans(sdk_spans()).SerializeToString(), PB)
        assert resp.status_code == 200
        assert len(self.intake.accepted) == before + 1


def _start(config: HttpProtocolConfig, auth: AuthConfig | None = None) -> Gateway:
    intake, telemetry = RecordingIntake(), Telemetry()
    return Gateway(OtlpHttpReceiver("otlp", config, auth, intake, LOG, telemetry), intake, telemetry)


@pytest.fixture
def gw() -> Iterator[Gateway]:
    g = _start(HttpProtocolConfig(endpoint="127.0.0.1:0", max_request_body_size_mib=LIMIT_MIB))
    yield g
    g.receiver.stop(1.0)


def _status(resp: requests.Response) -> status_pb2.Status:
    if resp.headers["Content-Type"] == "application/x-protobuf":
        return status_pb2.Status.FromString(resp.content)
    doc = resp.json()
    status = status_pb2.Status(code=doc.get("code", 0), message=doc.get("message", ""))
    return status


# ---------------------------------------------------------------- content arrives intact


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_traces_logs_metrics_arrive_intact(gw: Gateway, compression: Compression) -> None:
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=f"{gw.base}/v1/traces", compression=compression, timeout=10)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(sdk_spans(service="cart")) == SpanExportResult.SUCCESS  # reuses the connection
    exporter.shutdown()
    received = received_span_view(gw.intake)
    assert {k: v for k, v in received.items() if v[4] == "checkout"} == span_view(spans)

    logs = sdk_logs()
    log_exporter = OTLPLogExporter(endpoint=f"{gw.base}/v1/logs", compression=compression, timeout=10)
    assert log_exporter.export(logs) == LogRecordExportResult.SUCCESS
    log_exporter.shutdown()
    assert received_log_view(gw.intake) == sdk_log_view(logs)

    metric_exporter = OTLPMetricExporter(
        endpoint=f"{gw.base}/v1/metrics", compression=compression, timeout=10
    )
    assert metric_exporter.export(sdk_metrics()) == MetricExportResult.SUCCESS
    metric_exporter.shutdown()
    assert received_metric_view(gw.intake) == {
        ("http.server.requests", "/cart"): 5,
        ("http.server.requests", "/pay"): 2,
        ("http.server.duration", "/cart"): (3, 265.0),
    }
    assert [a.signal for a in gw.intake.accepted] == [
        Signal.TRACES,
        Signal.TRACES,
        Signal.LOGS,
        Signal.METRICS,
    ]
    # raw is the decompressed body, so duplicate detection sees the same bytes either way
    first = gw.intake.accepted[0]
    assert first.raw == first.request.SerializeToString()
    assert first.receiver == "otlp"


def test_json_bodies_in_and_out(gw: Gateway) -> None:
    requests_by_signal = {
        "/v1/traces": encode_spans(sdk_spans()),
        "/v1/logs": encode_logs(sdk_logs()),
        "/v1/metrics": encode_metrics(sdk_metrics()),
    }
    for path, request in requests_by_signal.items():
        resp = gw.post(path, to_json(request).encode(), {"Content-Type": "application/json; charset=utf-8"})
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.json() == {}
    assert [a.request for a in gw.intake.accepted] == list(requests_by_signal.values())


def test_partial_success_in_both_encodings(gw: Gateway) -> None:
    gw.intake.result = AcceptResult(
        rejected_items=2, error_message="rejected 2 spans: end_time before start_time x2"
    )
    request = encode_spans(sdk_spans())
    resp = gw.post("/v1/traces", request.SerializeToString(), PB)
    assert resp.status_code == 200
    partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (
        2,
        "rejected 2 spans: end_time before start_time x2",
    )
    resp = gw.post("/v1/traces", to_json(request).encode(), JS)
    assert resp.json() == {
        "partialSuccess": {
            "rejectedSpans": "2",
            "errorMessage": "rejected 2 spans: end_time before start_time x2",
        }
    }
    logs = gw.post("/v1/logs", encode_logs(sdk_logs()).SerializeToString(), PB)
    assert b"rejected 2 spans" in logs.content  # the logs response carries partial_success too


def test_keep_alive_and_chunked_bodies(gw: Gateway) -> None:
    body = encode_spans(sdk_spans()).SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers=PB)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        sock = conn.sock
        # a refused request with a small body keeps the connection usable too
        conn.request("POST", "/v1/traces", body=b"not protobuf at all", headers=PB)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 400
        conn.request(
            "POST", "/v1/traces", body=iter([body[:100], body[100:]]), headers=PB, encode_chunked=True
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        assert conn.sock is sock  # all three on one connection
    finally:
        conn.close()
    assert len(gw.intake.accepted) == 2
    assert gw.intake.accepted[1].raw == body


# ---------------------------------------------------------------- bad input


def test_malformed_bodies_get_400_with_status_in_request_encoding(gw: Gateway) -> None:
    resp = gw.post("/v1/traces", b"\xff\xff\xff\xff card 4111111111111111", PB)
    assert resp.status_code == 400
    status = status_pb2.Status.FromString(resp.content)
    assert status.code == 3  # INVALID_ARGUMENT
    assert status.message.startswith("cannot decode ExportTraceServiceRequest: ")
    assert "4111111111111111" not in status.message

    truncated = encode_spans(sdk_spans()).SerializeToString()[:-5]
    resp = gw.post("/v1/traces", truncated, PB)
    assert resp.status_code == 400 and b"cannot decode" in resp.content

    resp = gw.post(
        "/v1/logs", b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz-secret"}]}]}]}', JS
    )
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/json"
    message = resp.json()["message"]
    assert "resourceLogs[0].scopeLogs[0].logRecords[0].traceId: not a hex string" in message
    assert "secret" not in message
    assert gw.intake.accepted == []
    assert gw.refused("malformed") == 3
    gw.still_serving()


def test_wrong_media_type_method_and_path(gw: Gateway) -> None:
    body = encode_spans(sdk_spans()).SerializeToString()
    resp = gw.post("/v1/traces", body, {"Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert "application/x-protobuf" in resp.json()["message"]
    resp = gw.post("/v1/traces", body, {**PB, "Content-Encoding": "br"})
    assert resp.status_code == 415 and "Content-Encoding" in _status(resp).message
    resp = requests.get(gw.base + "/v1/traces", timeout=10)
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    resp = gw.post("/v1/profiles", body, PB)
    assert resp.status_code == 404
    assert gw.intake.accepted == []
    assert gw.refused("unsupported_media_type") == 2
    gw.still_serving()


def test_oversize_and_compression_bombs_get_413_with_the_limit(gw: Gateway) -> None:
    request = encode_spans(sdk_spans())
    request.resource_spans[0].scope_spans[0].spans[0].name = "x" * LIMIT
    big = request.SerializeToString()
    limit_text = f"over the limit of {LIMIT} bytes (max_request_body_size_mib=0.05)"

    resp = gw.post("/v1/traces", big, PB)
    assert resp.status_code == 413
    assert limit_text in _status(resp).message
    assert "request body is" in _status(resp).message
    # far over the limit: the client still gets to read the 413 instead of a connection reset
    huge = b"\x0a" * (8 * 1024 * 1024)
    resp = gw.post("/v1/traces", huge, PB)
    assert resp.status_code == 413
    assert f"request body is {len(huge)} bytes, {limit_text}" in _status(resp).message
    # HEAD gets the status without a body
    head = requests.head(gw.base + "/v1/traces", timeout=10)
    assert head.status_code == 405 and head.content == b""

    bomb = b"\0" * (20 * 1024 * 1024)
    for encoding, payload in (
        ("gzip", gzip.compress(bomb)),
        ("deflate", zlib.compress(bomb)),
        ("zstd", zstandard.ZstdCompressor().compress(bomb)),
    ):
        assert len(payload) < LIMIT  # small on the wire
        resp = gw.post("/v1/traces", payload, {**PB, "Content-Encoding": encoding})
        assert resp.status_code == 413, encoding
        assert "decompressed request body" in _status(resp).message
        assert limit_text in _status(resp).message

    # the same compressions within the limit are accepted
    small = encode_spans(sdk_spans()).SerializeToString()
    for encoding, payload in (
        ("gzip", gzip.compress(small)),
        ("deflate", zlib.compress(small)),
        ("deflate", zlib.compress(small)[2:-4]),  # raw deflate, as some clients send it
        ("zstd", zstandard.ZstdCompressor().compress(small)),
    ):
        resp = gw.post("/v1/traces", payload, {**PB, "Content-Encoding": encoding})
        assert resp.status_code == 200, encoding
    assert [a.raw for a in gw.intake.accepted] == [small] * 4
    assert gw.refused("too_large") == 5

    resp = gw.post("/v1/traces", gzip.compress(small)[:-10], {**PB, "Content-Encoding": "gzip"})
    assert resp.status_code == 400 and "gzip" in _status(resp).message
    gw.still_serving()


def test_intake_errors_map_to_http_status(gw: Gateway) -> None:
    body = encode_spans(sdk_spans()).SerializeToString()
    gw.intake.raise_next.append(backpressure(retry_after=3.5))
    resp = gw.post("/v1/traces", body, PB)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "4"
    status = status_pb2.Status.FromString(resp.content)
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 4

    gw.intake.raise_next.append(processing_failed())
    resp = gw.post("/v1/traces", body, PB)
    assert resp.status_code == 500
    assert "dead-lettered" in _status(resp).message

    gw.intake.raise_next.append(RuntimeError("value 4111111111111111 broke it"))
    resp = gw.post("/v1/traces", to_json(encode_spans(sdk_spans())).encode(), JS)
    assert resp.status_code == 500
    assert resp.json()["message"] == "internal error"
    assert (gw.refused("backpressure"), gw.refused("processing_failed"), gw.refused("internal")) == (1, 1, 1)
    assert gw.intake.accepted == []
    gw.still_serving()


def test_sdk_http_exporter_honours_retry_after(gw: Gateway) -> None:
    gw.intake.raise_next.append(backpressure(retry_after=0.2))
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=f"{gw.base}/v1/traces", timeout=15)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert received_span_view(gw.intake) == span_view(spans)


def test_stop_closes_idle_keep_alive_connections(gw: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", "/v1/traces", body=encode_spans(sdk_spans()).SerializeToString(), headers=PB)
    assert conn.getresponse().read() == b""
    gw.receiver.stop(1.0)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/traces", body=b"", headers=PB)
        conn.getresponse()
    conn.close()


# ---------------------------------------------------------------- auth and TLS


def test_bearer_auth_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EG_TEST_TOKEN", "env-token-123")
    g = _start(HttpProtocolConfig(endpoint="127.0.0.1:0"), AuthConfig(bearer_token_env="EG_TEST_TOKEN"))
    try:
        body = encode_spans(sdk_spans()).SerializeToString()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic env-token-123"}):
            resp = g.post("/v1/traces", body, {**PB, **headers})
            assert resp.status_code == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert "env-token-123" not in resp.text
        exporter = OTLPSpanExporter(endpoint=f"{g.base}/v1/traces", headers={"Authorization": "Bearer wrong"})
        assert exporter.export(sdk_spans()) == SpanExportResult.FAILURE
        exporter.shutdown()
        assert g.intake.accepted == []
        assert g.refused("unauthenticated") == 4
        spans = sdk_spans()
        exporter = OTLPSpanExporter(
            endpoint=f"{g.base}/v1/traces", headers={"Authorization": "Bearer env-token-123"}
        )
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(g.intake) == span_view(spans)
    finally:
        g.receiver.stop(1.0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls_and_mtls(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these variables override a session's CA (the SDK's certificate_file).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    tls = TLSServerConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key))
    g = _start(HttpProtocolConfig(endpoint="127.0.0.1:0", tls=tls))
    try:
        spans = sdk_spans()
        url = f"https://localhost:{g.port}/v1/traces"
        exporter = OTLPSpanExporter(endpoint=url, certificate_file=str(pki.ca_cert), timeout=10)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(g.intake) == span_view(spans)
        with pytest.raises(requests.exceptions.SSLError):  # server cert not trusted without the CA
            requests.post(url, data=b"", headers=PB, timeout=5)
    finally:
        g.receiver.stop(1.0)

    mtls = TLSServerConfig(
        cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca_cert)
    )
    g = _start(HttpProtocolConfig(endpoint="127.0.0.1:0", tls=mtls))
    url = f"https://localhost:{g.port}/v1/traces"
    body = encode_spans(sdk_spans()).SerializeToString()
    try:
        for cert in (None, (str(pki.rogue_client_cert), str(pki.rogue_client_key))):
            with pytest.raises(requests.exceptions.RequestException):
                requests.post(url, data=body, headers=PB, verify=str(pki.ca_cert), cert=cert, timeout=5)
        assert g.intake.accepted == []
        spans = sdk_spans()
        exporter = OTLPSpanExporter(
            endpoint=url,
            certificate_file=str(pki.ca_cert),
            client_certificate_file=str(pki.client_cert),
            client_key_file=str(pki.client_key),
            timeout=10,
        )
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(g.intake) == span_view(spans)
    finally:
        g.receiver.stop(1.0)


def test_json_response_is_compact_single_object(gw: Gateway) -> None:
    resp = gw.post("/v1/metrics", b"{}", JS)
    assert resp.status_code == 200 and json.loads(resp.content) == {}
    # an empty request is valid OTLP; the intake decides what to do with it
    assert len(gw.intake.accepted) == 1


def test_unused_path_config(tmp_path: Path) -> None:
    g = _start(HttpProtocolConfig(endpoint="127.0.0.1:0", traces_url_path="/otlp/v1/traces"))
    try:
        body = encode_spans(sdk_spans()).SerializeToString()
        assert g.post("/v1/traces", body, PB).status_code == 404
        assert g.post("/otlp/v1/traces", body, PB).status_code == 200
    finally:
        g.receiver.stop(1.0)
