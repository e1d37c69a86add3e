"""The delivery guarantee on a real full disk: a size-limited tmpfs holds data_dir and the
persistent queue, the backend is down, a client keeps sending 20-span requests until the disk
refuses them, the gateway is SIGKILLed while full, restarted, space is freed, the backend comes
back: every acknowledged span arrives (matched by name), no request is ever answered INTERNAL,
and readiness says fail while full and pass after. Run with the free-space floor (the refusal
comes before the disk is full) and without it (real ENOSPC in the middle of writes), and with
the dead-letter store as the filler (half of every request invalid): the dead letters give way
to the queue's live data, counted, instead of starving it."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.gateway import GatewayProcess, free_port, metric_value
from tests.support.otlp_sink import OtlpSink
from tests.test_reliability import exporter_call

FS_MIB = 12
FILLER_MIB = 5
PADDING = "x" * 1000  # ~1 KB per span, so the disk fills after a few hundred requests


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_MIB}m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _request(n: int, invalid: int = 0) -> ExportTraceServiceRequest:
    """20 spans, the last ``invalid`` of them with an all-zero trace id (dead-lettered)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "disk-full"
    ss = rs.scope_spans.add()
    for i in range(20):
        trace_id = bytes(16) if i >= 20 - invalid else (n * 100 + i + 1).to_bytes(16, "big")
        span = ss.spans.add(name=f"r{n}-{i}", trace_id=trace_id)
        span.span_id = (i + 1).to_bytes(8, "big")
        span.start_time_unix_nano, span.end_time_unix_nano = 1_000, 2_000
        span.attributes.add(key="padding").value.string_value = PADDING
    return req


def _config(tmp_path: Path, fs: Path, sink: str, grpc_port: int, metrics_port: int, floor: int) -> Path:
    text = f"""
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: 127.0.0.1:{grpc_port}}}}}}}
exporters:
  otlp:
    endpoint: {sink}
    tls: {{insecure: true}}
    timeout: 1s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 300ms}}
    circuit_breaker: {{failure_threshold: 3, open_duration: 200ms}}
    sending_queue: {{storage: {fs / "queue"}, max_size_mib: 64}}
service:
  data_dir: {fs / "data"}
  disk: {{min_free_mib: {floor}, check_interval: 0s}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlp]}}
  telemetry:
    metrics: {{endpoint: 127.0.0.1:{metrics_port}}}
"""
    path = tmp_path / "errorgate.yaml"
    path.write_text(text)
    return path


def _ready(metrics_port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=2) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)


def _fill(gateway: GatewayProcess, acked: set[int], codes: list[grpc.StatusCode], invalid: int = 0) -> None:
    """Send until the disk has refused 20 requests in a row; remember what was acknowledged."""
    refused_in_a_row = 0
    n = len(acked) + len(codes) + 1000
    with grpc.insecure_channel(gateway.grpc_endpoint) as channel:
        call = exporter_call(channel)
        while refused_in_a_row < 20 and n < 20_000:
            n += 1
            try:
                call(_request(n, invalid).SerializeToString(), timeout=10)
                acked.add(n)
                refused_in_a_row = 0
            except grpc.RpcError as e:
                codes.append(e.code())
                refused_in_a_row += 1
    assert refused_in_a_row == 20, "the disk never filled"


def _metric(metrics_port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        return metric_value(r.read().decode(), name, **labels)


@pytest.mark.parametrize(
    ("floor_mib", "invalid"),
    [(2, 0), (0, 0), (2, 10)],
    ids=["free-space-floor", "real-enospc", "dead-letters-fill"],
)
def test_full_disk_loses_nothing_acknowledged(
    tmp_path: Path, small_fs: Path, floor_mib: int, invalid: int
) -> None:
    (small_fs / "filler").write_bytes(b"\0" * FILLER_MIB * 1048576)
    grpc_port, metrics_port = free_port(), free_port()
    acked: set[int] = set()
    codes: list[grpc.StatusCode] = []
    with OtlpSink(http_enabled=False) as sink:
        endpoint = sink.grpc_endpoint
        sink.stop()  # the backend is down throughout the filling
        config = _config(tmp_path, small_fs, endpoint, grpc_port, metrics_port, floor_mib)
        gateway = GatewayProcess(
            config, grpc_port, metrics_port, stderr_file=tmp_path / "gateway.log"
        ).start()
        try:
            _fill(gateway, acked, codes, invalid)
            assert _ready(metrics_port) == "503"  # full: not ready, so load balancers steer away
            if invalid:  # the dead letters made room for the queue, and said so
                given_way = _metric(
                    metrics_port, "errorgate_dead_letter_expired_items_total", limit="disk_space"
                )
                assert given_way > 0
            gateway.kill()  # SIGKILL while full
            gateway = GatewayProcess(config, grpc_port, metrics_port, stderr_file=tmp_path / "gateway.log")
            gateway.start(require_ready=False)  # a full disk must not keep it from starting
            _fill(gateway, acked, codes, invalid)  # still full after the restart: refused, never INTERNAL
            (small_fs / "filler").unlink()  # space returns
            deadline = time.monotonic() + 10
            while _ready(metrics_port) != "200":
                assert time.monotonic() < deadline, "readiness did not recover when space returned"
                time.sleep(0.2)
            sink.start()  # the backend returns
            expected = (20 - invalid) * len(acked)
            assert sink.wait_for(expected, timeout=120), f"{sink.item_count()} of {expected} arrived"
        finally:
            gateway.close()
        names = {s.name for s in sink.spans()}
    assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, set(codes)  # retryable, never INTERNAL
    assert len(acked) > 50
    valid = range(20 - invalid)
    missing = [f"r{n}-{i}" for n in acked for i in valid if f"r{n}-{i}" not in names]
    assert missing == [], f"{len(missing)} acknowledged spans lost"
