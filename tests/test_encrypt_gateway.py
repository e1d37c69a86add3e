"""The encrypt processor inside a real gateway: fields leave encrypted, the persistent queue is
encrypted at rest with the same keyring, and the result decrypts only through the audited CLI."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from errorgate import attributes
from errorgate.cli import main
from tests.support.gateway import gateway_yaml, otlp_exporter_yaml, running_gateway
from tests.support.otlp_sink import OtlpSink

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PLANTED_NAME = "checkout-for-planted-5555444433331111"
EMAIL = "planted.person@example.com"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ERRORGATE_KEYRING", "ERRORGATE_ACCESS_POLICY", "ERRORGATE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    # The bundled roles, held by this test's OS group (a deployment lists its real groups).
    group = grp.getgrgid(os.getgid()).gr_name
    policy = tmp_path / "access.yaml"
    policy.write_text(
        "roles:\n"
        f"  security-oncall: {{groups: [{group}], services: ['*'], keys: ['user.*']}}\n"
        f"  sre: {{groups: [{group}], services: [], keys: []}}\n"
    )
    policy.chmod(0o644)
    monkeypatch.setenv("ERRORGATE_ACCESS_POLICY", str(policy))


def request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    attributes.set_value(rs.resource.attributes, "service.name", "checkout")
    attributes.set_value(rs.resource.attributes, "tenant.id", "acme")
    span = rs.scope_spans.add().spans.add(name=PLANTED_NAME, trace_id=b"\x07" * 16, span_id=b"\x08" * 8)
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000, 2_000
    attributes.set_value(span.attributes, "user.email", EMAIL)
    attributes.set_value(span.attributes, "http.route", "/checkout")
    return req


def test_gateway_encrypts_fields_and_queue_at_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    with OtlpSink() as sink:
        exporter = otlp_exporter_yaml(sink.grpc_endpoint, queue_dir=data / "queue")
        cfg = gateway_yaml(
            data, exporter=exporter, processors="{encrypt: {}}", pipeline_processors="[encrypt]"
        )
        with running_gateway(cfg) as gw:
            sink.stop()  # the backend is down: the batch waits in the persistent queue
            with grpc.insecure_channel(gw.grpc_endpoint) as ch:
                call = ch.unary_unary(
                    TRACE_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
                )
                call(request().SerializeToString(), timeout=10)
            queued = [p for p in (data / "queue").rglob("*") if p.is_file()]
            assert queued and any(p.stat().st_size > 0 for p in queued)
            for path in queued:
                content = path.read_bytes()
                # Not even the span name (which no rule encrypts) is readable on disk.
                assert PLANTED_NAME.encode() not in content and b"5555444433331111" not in content
                assert EMAIL.encode() not in content and b"/checkout" not in content
            sink.start()
            assert sink.wait_for(1, timeout=30)
        [span] = sink.spans()
    assert span.name == PLANTED_NAME
    got = attributes.to_dict(span.attributes)
    assert got["http.route"] == "/checkout"
    token = str(got["user.email"])
    assert token.startswith("enc:v2:") and EMAIL not in token
    assert (data / "keys" / "keyring.json").stat().st_mode & 0o777 == 0o600

    common = ["decrypt", "--data-dir", str(data), "--service", "checkout", "--key", "user.email"]
    common += ["--tenant", "acme", "--reason", "INC-1 chargeback dispute", token]
    assert main([*common, "--role", "sre"]) != 0
    assert capsys.readouterr().out == ""
    assert main([*common, "--role", "security-oncall"]) == 0
    assert capsys.readouterr().out == EMAIL + "\n"
    assert main(["audit", "verify", "--data-dir", str(data)]) == 0
    # The gateway's rules at start-up, the policy seen first, then the two attempts.
    assert "4 entries" in capsys.readouterr().out
