"""build_receivers: what the gateway calls with a validated ``receivers.otlp`` section."""

from __future__ import annotations

import logging

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from errorgate.config import ConfigError
from errorgate.receiver import OtlpReceiverConfig, build_receivers
from errorgate.telemetry import Telemetry
from tests.support.receiver_kit import RecordingIntake, received_span_view, sdk_spans, span_view

LOG = logging.getLogger("test.receiver.factory")


def test_builds_both_protocols_from_config() -> None:
    config = OtlpReceiverConfig.model_validate(
        {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}}
    )
    intake = RecordingIntake()
    receivers = build_receivers("otlp", config, intake, LOG, Telemetry())
    assert [r.protocol for r in receivers] == ["grpc", "http"]
    try:
        ports = [r.start() for r in receivers]
        assert all(ports) and ports[0] != ports[1]
        assert [r.endpoint for r in receivers] == [f"127.0.0.1:{p}" for p in ports]
        spans = sdk_spans()
        exporter = OTLPSpanExporter(endpoint=receivers[0].endpoint, insecure=True, timeout=10)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert received_span_view(intake) == span_view(spans)
        resp = requests.post(
            f"http://{receivers[1].endpoint}/v1/logs",
            data=b"{}",
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        assert resp.status_code == 200
    finally:
        for r in receivers:
            r.stop(1.0)


def test_only_configured_protocols_are_built() -> None:
    config = OtlpReceiverConfig.model_validate({"protocols": {"http": {"endpoint": "127.0.0.1:0"}}})
    receivers = build_receivers("otlp/http-only", config, RecordingIntake(), LOG, Telemetry())
    assert [r.protocol for r in receivers] == ["http"]
    # the embedded default enables both
    assert [
        r.protocol for r in build_receivers("otlp", OtlpReceiverConfig(), RecordingIntake(), LOG, Telemetry())
    ] == [
        "grpc",
        "http",
    ]


def test_unknown_keys_and_bad_auth_fail_with_key_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_recv_msg_size"):
        OtlpReceiverConfig.model_validate({"protocols": {"grpc": {"max_recv_msg_size": 4}}})
    monkeypatch.delenv("EG_NO_SUCH_TOKEN", raising=False)
    config = OtlpReceiverConfig.model_validate(
        {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}, "auth": {"bearer_token_env": "EG_NO_SUCH_TOKEN"}}
    )
    with pytest.raises(ConfigError, match=r"^receivers\.otlp/edge\.auth: "):
        build_receivers("otlp/edge", config, RecordingIntake(), LOG, Telemetry())


def test_port_in_use_is_a_config_error() -> None:
    config = OtlpReceiverConfig.model_validate(
        {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}}
    )
    first = build_receivers("otlp", config, RecordingIntake(), LOG, Telemetry())
    try:
        ports = [r.start() for r in first]
        taken = OtlpReceiverConfig.model_validate(
            {"protocols": {"http": {"endpoint": f"127.0.0.1:{ports[1]}"}}}
        )
        (http,) = build_receivers("otlp", taken, RecordingIntake(), LOG, Telemetry())
        with pytest.raises(ConfigError, match=r"receivers\.otlp\.protocols\.http\.endpoint: cannot listen"):
            http.start()
        taken_grpc = OtlpReceiverConfig.model_validate(
            {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{ports[0]}"}}}
        )
        (grpc_receiver,) = build_receivers("otlp", taken_grpc, RecordingIntake(), LOG, Telemetry())
        with pytest.raises(ConfigError, match=r"receivers\.otlp\.protocols\.grpc\.endpoint: cannot listen"):
            grpc_receiver.start()
    finally:
        for r in first:
            r.stop(1.0)
