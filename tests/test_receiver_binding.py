"""An endpoint on every network interface (":4317", 0.0.0.0, [::]) is easy to write by mistake and
exposes the gateway: a WARNING at startup names the config key. The wildcard listeners here live
for a moment on an ephemeral port."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from errorgate.config import binds_all_interfaces
from errorgate.receiver import GrpcProtocolConfig, HttpProtocolConfig
from errorgate.receiver.grpc_server import OtlpGrpcReceiver
from errorgate.receiver.http_server import OtlpHttpReceiver
from errorgate.telemetry import Telemetry
from tests.support.binding import has_ipv6, warnings_logged
from tests.support.gateway import running_gateway
from tests.support.receiver_kit import RecordingIntake

LOG = logging.getLogger("test.receiver.binding")


WILDCARDS = [
    ":0",
    "0.0.0.0:0",
    pytest.param("[::]:0", marks=pytest.mark.skipif(not has_ipv6(), reason="no IPv6")),
]


@pytest.mark.parametrize("endpoint", WILDCARDS)
def test_receivers_on_all_interfaces_warn_naming_the_key(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    grpc_receiver = OtlpGrpcReceiver(
        "otlp/edge", GrpcProtocolConfig(endpoint=endpoint), None, RecordingIntake(), LOG, Telemetry()
    )
    http_receiver = OtlpHttpReceiver(
        "otlp/edge", HttpProtocolConfig(endpoint=endpoint), None, RecordingIntake(), LOG, Telemetry()
    )
    try:
        grpc_receiver.start()
        http_receiver.start()
    finally:
        grpc_receiver.stop(0.5)
        http_receiver.stop(0.5)
    warnings = warnings_logged(caplog)
    assert len(warnings) == 2
    for protocol, warning in zip(("grpc", "http"), warnings, strict=True):
        assert warning.startswith(
            f"receivers.otlp/edge.protocols.{protocol}.endpoint listens on all network interfaces"
        )


def test_receivers_on_one_address_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    for receiver in (
        OtlpGrpcReceiver(
            "otlp", GrpcProtocolConfig(endpoint="127.0.0.1:0"), None, RecordingIntake(), LOG, Telemetry()
        ),
        OtlpHttpReceiver(
            "otlp", HttpProtocolConfig(endpoint="127.0.0.1:0"), None, RecordingIntake(), LOG, Telemetry()
        ),
    ):
        receiver.start()
        receiver.stop(0.5)
    assert warnings_logged(caplog) == []


@pytest.mark.parametrize(
    ("host", "everywhere"),
    [("", True), ("0.0.0.0", True), ("::", True), ("0:0:0:0:0:0:0:0", True), ("127.0.0.1", False),
     ("::1", False), ("10.1.2.3", False), ("collector.internal", False), ("localhost", False)],
)  # fmt: skip
def test_which_hosts_mean_every_interface(host: str, everywhere: bool) -> None:
    assert binds_all_interfaces(host) is everywhere


def _config(tmp_path: Path, metrics_endpoint: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
      http: {{endpoint: 127.0.0.1:0}}
exporters:
  debug: {{}}
service:
  data_dir: {tmp_path}
  processor_worker: {{enabled: false}}
  pipelines:
    logs: {{receivers: [otlp], exporters: [debug]}}
  telemetry:
    metrics: {{endpoint: "{metrics_endpoint}"}}
"""


@pytest.mark.parametrize(("endpoint", "warned"), [("0.0.0.0:0", True), ("127.0.0.1:0", False), (":0", False)])
def test_the_metrics_endpoint_on_all_interfaces_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, endpoint: str, warned: bool
) -> None:
    """``:port`` means 127.0.0.1 for the metrics endpoint (unlike the receivers): no warning."""
    caplog.set_level(logging.INFO)
    with running_gateway(_config(tmp_path, endpoint)):
        pass
    warnings = [w for w in warnings_logged(caplog) if "listens on all network interfaces" in w]
    if warned:
        assert len(warnings) == 1
        assert warnings[0].startswith("service.telemetry.metrics.endpoint listens on all network interfaces")
    else:
        assert warnings == []
