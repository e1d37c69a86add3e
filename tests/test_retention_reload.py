"""The retention policy and its legal holds are re-read without a restart: when the file changes
(a stat every ``watch_interval``) and on SIGHUP. A file that does not load is logged with its
error and the policy in force stays."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from errorgate import attributes
from errorgate.component import PROCESSORS, ComponentContext
from errorgate.signals import Batch, iter_log_records
from errorgate.telemetry import Telemetry
from tests.support.gateway import GatewayProcess, free_port
from tests.support.otlp_sink import OtlpSink, log_request

POLICY = """
default_class: ops-30d
legal_hold_class: audit-7y
classes:
  ops-30d: {days: 30}
  audit-7y: {days: 2555}
rules: []
legal_holds: []
"""
HOLD = """
legal_holds:
  - id: LH-2024-17
    reason: litigation
    match: {service: [checkout]}
    start: 2020-01-01T00:00:00Z
"""


def _retention(tmp_path: Path, policy: Path, **settings: object) -> object:
    factory = PROCESSORS.get("retention")
    assert factory is not None
    config = factory.config_model.model_validate({"policy": str(policy), **settings})
    return factory.create(
        config, ComponentContext("retention", tmp_path, Telemetry(), logging.getLogger("t"))
    )


def _holds(processor: object) -> set[str]:
    out = processor.process(Batch.of(log_request(2)))  # type: ignore[attr-defined]
    return {
        str(attributes.to_dict(record.attributes).get("errorgate.legal_hold"))
        for batch in out.batches
        for _, _, record in iter_log_records(batch.request)
    }


def _write(path: Path, text: str) -> None:
    """Replace the file as an editor or a config-management tool does (a new inode)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_legal_hold_added_to_the_file_applies_to_new_items_within_seconds(tmp_path: Path) -> None:
    policy = tmp_path / "retention.yaml"
    policy.write_text(POLICY)
    processor = _retention(tmp_path, policy, watch_interval="100ms")
    assert _holds(processor) == {"None"}
    _write(policy, POLICY.replace("legal_holds: []\n", HOLD))
    deadline = time.monotonic() + 5
    while _holds(processor) != {"LH-2024-17"}:
        assert time.monotonic() < deadline, "the new legal hold was not applied within 5 s"
        time.sleep(0.05)


def test_a_broken_file_is_logged_with_its_error_and_the_policy_in_force_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = tmp_path / "retention.yaml"
    policy.write_text(POLICY.replace("legal_holds: []\n", HOLD))
    processor = _retention(tmp_path, policy, watch_interval=0)
    _write(policy, POLICY.replace("rules: []", "rules: []\nretention_dayz: 3"))
    with caplog.at_level(logging.ERROR):
        processor.reload()  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert "retention_dayz" in record.getMessage() and "processors.retention.policy" in record.getMessage()
    assert _holds(processor) == {"LH-2024-17"}  # the last good policy, hold included


def test_sighup_reloads_the_policy_in_the_processor_worker(tmp_path: Path) -> None:
    policy = tmp_path / "retention.yaml"
    policy.write_text(POLICY)
    grpc_port, metrics_port = free_port(), free_port()
    with OtlpSink() as sink:
        config = tmp_path / "errorgate.yaml"
        config.write_text(
            f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{grpc_port}"}}}}}}
processors:
  retention: {{policy: {policy}, watch_interval: 0}}
exporters:
  otlp: {{endpoint: {sink.grpc_endpoint}, tls: {{insecure: true}}}}
service:
  data_dir: {tmp_path / "data"}
  pipelines:
    logs: {{receivers: [otlp], processors: [retention], exporters: [otlp]}}
  telemetry:
    metrics: {{endpoint: "127.0.0.1:{metrics_port}"}}
"""
        )
        gw = GatewayProcess(config, grpc_port, metrics_port, stderr_file=tmp_path / "gw.log")
        try:
            gw.start()
            _send(gw, 1)
            _write(policy, POLICY.replace("legal_holds: []\n", HOLD))
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while True:
                _send(gw, 1)
                held = [
                    r
                    for r in sink.log_records()
                    if attributes.to_dict(r.attributes).get("errorgate.legal_hold")
                ]
                if held:
                    break
                assert time.monotonic() < deadline, "SIGHUP did not apply the new legal hold"
                time.sleep(0.3)
            assert gw.proc.poll() is None  # SIGHUP reloads; it does not stop the gateway
            assert gw.terminate() == 0
        finally:
            gw.close()
    assert "reloaded (0 rules, 1 legal holds)" in (tmp_path / "gw.log").read_text()


_sent = iter(range(1_000_000))


def _send(gw: GatewayProcess, n: int) -> None:
    """``n`` new log records (each request differs: an identical one is acknowledged as a duplicate)."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

    with grpc.insecure_channel(gw.grpc_endpoint) as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        stub.Export(log_request(n, start=next(_sent) * 100), timeout=10)
