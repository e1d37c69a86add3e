"""The ``otlp`` exporter against a real gRPC / HTTP sink: content, headers, status mapping."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from errorgate.component import ComponentContext, ExportStatus
from errorgate.config import ConfigError, parse_config
from errorgate.exporters._otlp_http import parse_retry_after
from errorgate.exporters.otlp import OtlpExporter, OtlpExporterConfig
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry
from tests.support.certs import make_pki
from tests.support.otlp_sink import OtlpSink, log_request, metric_request, trace_request

PROTOCOLS = ["grpc", "http/protobuf"]


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(sink: OtlpSink) -> None:
    sink.reset()


def _exporter(sink: OtlpSink, protocol: str, tmp_path: Path, **extra: object) -> OtlpExporter:
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_url
    config = OtlpExporterConfig.model_validate(
        {"endpoint": endpoint, "protocol": protocol, "tls": {"insecure": True}, **extra}
    )
    ctx = ComponentContext("otlp", tmp_path, Telemetry(), logging.getLogger("test"))
    return OtlpExporter(config, ctx)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_exact_content_arrives(sink: OtlpSink, tmp_path: Path, protocol: str, compression: str) -> None:
    exp = _exporter(sink, protocol, tmp_path, compression=compression, headers={"X-Tenant": "acme"})
    sent = [trace_request(5, service="cart"), log_request(4, service="cart"), metric_request(3)]
    for req in sent:
        assert exp.export(Batch.of(req), timeout=5).status is ExportStatus.SUCCESS
    exp.shutdown()
    assert [r.request for r in sink.requests] == sent
    assert {r.protocol for r in sink.requests} == {"grpc" if protocol == "grpc" else "http"}
    assert all(r.headers.get("x-tenant") == "acme" for r in sink.requests)
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(5)]
    assert len(sink.log_records()) == 4 and len(sink.metric_points()) == 3


GRPC_CASES = [
    (grpc.StatusCode.UNAVAILABLE, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.DEADLINE_EXCEEDED, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.ABORTED, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.CANCELLED, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.OUT_OF_RANGE, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.DATA_LOSS, None, ExportStatus.RETRYABLE),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, None, ExportStatus.PERMANENT),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 2.5, ExportStatus.RETRYABLE),
    (grpc.StatusCode.INVALID_ARGUMENT, None, ExportStatus.PERMANENT),
    (grpc.StatusCode.PERMISSION_DENIED, None, ExportStatus.PERMANENT),
    (grpc.StatusCode.UNAUTHENTICATED, None, ExportStatus.PERMANENT),
    (grpc.StatusCode.INTERNAL, None, ExportStatus.PERMANENT),
]


@pytest.mark.parametrize(("code", "retry_after", "expected"), GRPC_CASES, ids=lambda v: str(v))
def test_grpc_status_mapping(
    sink: OtlpSink, tmp_path: Path, code: grpc.StatusCode, retry_after: float | None, expected: ExportStatus
) -> None:
    exp = _exporter(sink, "grpc", tmp_path)
    sink.fail_next(1, grpc_code=code, retry_after=retry_after)
    result = exp.export(Batch.of(trace_request(1)), timeout=5)
    exp.shutdown()
    assert result.status is expected
    assert result.reason == code.name
    assert result.retry_after == retry_after
    assert sink.requests == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, "retryable"), (502, "retryable"), (503, "retryable"), (504, "retryable")]
    + [(s, "permanent") for s in (400, 401, 403, 404, 413, 500, 501)],
)
def test_http_status_mapping(sink: OtlpSink, tmp_path: Path, status: int, expected: str) -> None:
    exp = _exporter(sink, "http/protobuf", tmp_path)
    sink.fail_next(1, http_status=status, retry_after=3)
    result = exp.export(Batch.of(trace_request(1)), timeout=5)
    # The connection is still usable afterwards.
    assert exp.export(Batch.of(trace_request(1)), timeout=5).status is ExportStatus.SUCCESS
    exp.shutdown()
    assert result.status.value == expected and result.reason == f"HTTP {status}"
    if expected == "retryable":
        assert result.retry_after == 3.0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_reports_rejected_items(sink: OtlpSink, tmp_path: Path, protocol: str) -> None:
    exp = _exporter(sink, protocol, tmp_path)
    sink.reject_next(1, rejected=2)
    result = exp.export(Batch.of(log_request(5)), timeout=5)
    exp.shutdown()
    assert result.status is ExportStatus.SUCCESS and result.rejected_items == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_refused_is_retryable(tmp_path: Path, protocol: str) -> None:
    down = OtlpSink().start()
    down.stop()  # a port nobody listens on any more
    exp = _exporter(down, protocol, tmp_path)
    result = exp.export(Batch.of(trace_request(1)), timeout=2)
    exp.shutdown()
    assert result.status is ExportStatus.RETRYABLE


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_config_errors_name_the_key() -> None:
    base = "service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}\nreceivers: {otlp: {}}\n"
    with pytest.raises(ConfigError, match=r"exporters\.otlp\.endpoint: Field required"):
        parse_config(base + "exporters: {otlp: {}}")
    with pytest.raises(ConfigError, match=r"exporters\.otlp\.protocol"):
        parse_config(base + "exporters: {otlp: {endpoint: 'x:1', protocol: udp}}")
    with pytest.raises(ConfigError, match=r"exporters\.otlp\.retry_on_failure\.initial_intervl: unknown key"):
        parse_config(base + "exporters: {otlp: {endpoint: 'x:1', retry_on_failure: {initial_intervl: 1s}}}")
    cfg = parse_config(base + "exporters: {otlp: {endpoint: 'x:1', timeout: 250ms}}")
    assert cfg.exporters["otlp"].timeout == 0.25


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mtls", [False, True])
def test_tls_and_mutual_tls(tmp_path: Path, protocol: str, mtls: bool) -> None:
    pki = make_pki(tmp_path / "pki")
    with OtlpSink(
        tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=pki.ca_cert if mtls else None
    ) as tls_sink:
        endpoint = tls_sink.grpc_endpoint if protocol == "grpc" else tls_sink.http_url
        ctx = ComponentContext("otlp", tmp_path, Telemetry(), logging.getLogger("test"))
        tls: dict[str, str] = {"ca_file": str(pki.ca_cert)}
        if mtls:
            tls |= {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
        good = OtlpExporter(
            OtlpExporterConfig.model_validate({"endpoint": endpoint, "protocol": protocol, "tls": tls}), ctx
        )
        assert good.export(Batch.of(trace_request(2)), timeout=5).status is ExportStatus.SUCCESS
        good.shutdown()
        # Default is secure with the system roots, which do not trust this CA: nothing is delivered.
        untrusted = OtlpExporter(
            OtlpExporterConfig.model_validate({"endpoint": endpoint, "protocol": protocol}), ctx
        )
        assert untrusted.export(Batch.of(trace_request(1)), timeout=2).status is not ExportStatus.SUCCESS
        untrusted.shutdown()
        if mtls:
            no_cert = OtlpExporter(
                OtlpExporterConfig.model_validate(
                    {"endpoint": endpoint, "protocol": protocol, "tls": {"ca_file": str(pki.ca_cert)}}
                ),
                ctx,
            )
            assert no_cert.export(Batch.of(trace_request(1)), timeout=2).status is not ExportStatus.SUCCESS
            no_cert.shutdown()
        assert tls_sink.requests[0].request == trace_request(2) and len(tls_sink.requests) == 1
