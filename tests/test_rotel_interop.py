"""Wire compatibility with a collector nobody here wrote: the ``rotel`` agent (Rust, from PyPI)
forwarding into errorgate, and errorgate forwarding into rotel. Content must arrive intact."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rotel
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from errorgate import attributes
from tests.support.gateway import free_port, gateway_yaml, otlp_exporter_yaml, running_gateway
from tests.support.otlp_sink import OtlpSink

ROTEL = Path(rotel.__file__).parent / "rotel-agent"


@contextmanager
def rotel_agent(tmp_path: Path, exporter_endpoint: str) -> Iterator[str]:
    port = free_port()
    cmd = [
        str(ROTEL),
        "start",
        "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
        "--otlp-http-endpoint", f"127.0.0.1:{free_port()}",
        "--exporter", "otlp",
        "--otlp-exporter-endpoint", f"http://{exporter_endpoint}",
        "--otlp-exporter-protocol", "grpc",
        "--batch-timeout", "100ms",
        "--pid-file", str(tmp_path / "rotel.pid"),
        "--log-file", str(tmp_path / "rotel.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        import socket

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "rotel exited"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _send(endpoint: str) -> tuple[int, int]:
    resource = Resource.create({"service.name": "interop", "service.version": "9.9.9"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = tp.get_tracer("interop")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/a/{b}")
        parent.set_attribute("retries", 3)
        parent.set_attribute("tags", ["x", "y"])
        with tracer.start_as_current_span("child") as child:
            child.add_event("cache miss", {"key.count": 2})
    tp.shutdown()
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True)))
    lp.get_logger("interop").emit(body="hello from interop", severity_number=SeverityNumber.WARN)
    lp.shutdown()
    return parent.get_span_context().trace_id, child.get_span_context().span_id


def _assert_intact(sink: OtlpSink, trace_id: int, child_span_id: int) -> None:
    assert sink.wait_for(3, timeout=30), f"only {sink.item_count()} items arrived"
    spans = {s.name: s for s in sink.spans()}
    assert set(spans) == {"parent", "child"}
    assert int.from_bytes(spans["parent"].trace_id, "big") == trace_id
    assert int.from_bytes(spans["child"].span_id, "big") == child_span_id
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert attributes.to_dict(spans["parent"].attributes) == {
        "http.route": "/a/{b}",
        "retries": 3,
        "tags": ["x", "y"],
    }
    [event] = spans["child"].events
    assert event.name == "cache miss" and attributes.to_dict(event.attributes) == {"key.count": 2}
    [log] = sink.log_records()
    assert log.body.string_value == "hello from interop" and log.severity_number == SeverityNumber.WARN.value


def test_rotel_forwards_into_errorgate(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(sink.grpc_endpoint))
        with running_gateway(cfg) as gw, rotel_agent(tmp_path, gw.grpc_endpoint) as agent:
            trace_id, child_id = _send(agent)
            _assert_intact(sink, trace_id, child_id)


def test_errorgate_forwards_into_rotel(tmp_path: Path) -> None:
    with OtlpSink() as sink, rotel_agent(tmp_path, sink.grpc_endpoint) as agent:
        cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(agent))
        with running_gateway(cfg) as gw:
            trace_id, child_id = _send(gw.grpc_endpoint)
            _assert_intact(sink, trace_id, child_id)
