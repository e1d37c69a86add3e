"""The whole gateway with real parts: the OpenTelemetry SDK sends over gRPC and HTTP, errorgate
(no processors) forwards over OTLP/gRPC, a test sink receives. Content is compared, counts balance."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from errorgate import attributes
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor, register_processor
from errorgate.signals import Batch, Signal, iter_spans
from tests.support.gateway import (
    final_metrics,
    gateway_yaml,
    metric_value,
    otlp_exporter_yaml,
    running_gateway,
)
from tests.support.otlp_sink import OtlpSink


@pytest.fixture
def sink() -> OtlpSink:
    with OtlpSink() as s:
        yield s


def _send_with_sdk(protocol: str, gateway_grpc: str, gateway_http: str) -> dict[str, object]:
    resource = Resource.create({"service.name": f"shop-{protocol}", "service.version": "1.2.3"})
    if protocol == "grpc":
        span_exp = GrpcSpanExporter(endpoint=gateway_grpc, insecure=True)
        log_exp = GrpcLogExporter(endpoint=gateway_grpc, insecure=True)
        metric_exp = GrpcMetricExporter(endpoint=gateway_grpc, insecure=True)
    else:
        span_exp = HttpSpanExporter(endpoint=f"http://{gateway_http}/v1/traces")
        log_exp = HttpLogExporter(endpoint=f"http://{gateway_http}/v1/logs")
        metric_exp = HttpMetricExporter(endpoint=f"http://{gateway_http}/v1/metrics")
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(span_exp))
    tracer = tp.get_tracer("e2e")
    with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/orders/{id}")
        root.set_attribute("http.response.status_code", 200)
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.system", "postgresql")
            child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
    trace_id = root.get_span_context().trace_id
    tp.shutdown()

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
    lp.get_logger("e2e").emit(
        body="order 42 shipped",
        severity_text="INFO",
        severity_number=SeverityNumber.INFO,
        attributes={"order.id": 42},
    )
    lp.shutdown()

    reader = InMemoryMetricReader()
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    mp.get_meter("e2e").create_counter("orders.shipped").add(3, {"region": "eu"})
    data = reader.get_metrics_data()
    assert data is not None
    metric_exp.export(data)
    mp.shutdown()
    return {"trace_id": trace_id}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_traffic_arrives_intact(protocol: str, sink: OtlpSink, tmp_path: Path) -> None:
    cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(sink.grpc_endpoint))
    with running_gateway(cfg) as gw:
        sent = _send_with_sdk(protocol, gw.grpc_endpoint, gw.http_endpoint)
        assert sink.wait_for(4, timeout=15), f"sink got {sink.item_count()} items"
        metrics = final_metrics(gw)

    spans = {s.name: s for s in sink.spans()}
    assert set(spans) == {"GET /orders/{id}", "SELECT orders"}
    root, child = spans["GET /orders/{id}"], spans["SELECT orders"]
    assert int.from_bytes(root.trace_id, "big") == sent["trace_id"]
    assert child.parent_span_id == root.span_id
    assert attributes.to_dict(root.attributes) == {
        "http.route": "/orders/{id}",
        "http.response.status_code": 200,
    }
    assert child.status.message == "deadlock detected"
    service_names = {
        attributes.get_str(r.resource.attributes, "service.name")
        for req in sink._requests(Signal.TRACES)
        for r in req.resource_spans
    }
    assert service_names == {f"shop-{protocol}"}
    [log] = sink.log_records()
    assert log.body.string_value == "order 42 shipped"
    assert attributes.to_dict(log.attributes) == {"order.id": 42}
    points = sink.metric_points()
    assert [(m.name, p.as_int, attributes.to_dict(p.attributes)) for m, p in points] == [
        ("orders.shipped", 3, {"region": "eu"})
    ]
    # Counts balance: everything received was exported, nothing dropped or dead-lettered.
    for signal, n in (("traces", 2), ("logs", 1), ("metrics", 1)):
        assert metric_value(metrics, "errorgate_received_items_total", signal=signal) == n
        assert metric_value(metrics, "errorgate_exported_items_total", signal=signal) == n
    assert metric_value(metrics, "errorgate_dropped_items_total") == 0
    assert metric_value(metrics, "errorgate_dead_lettered_items_total") == 0


class ExplodeConfig(ComponentConfig):
    trigger: str = "boom"


class ExplodingProcessor(Processor):
    """Raises on spans with a given name; a stand-in for a processor with a bug."""

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger

    def process(self, batch: Batch) -> Output:
        if batch.signal is Signal.TRACES:
            for _, _, span in iter_spans(batch.request):  # type: ignore[arg-type]
                span.attributes.add(key="touched")  # a half-done mutation must not reach the DLQ
                if span.name == self.trigger:
                    raise RuntimeError(f"cannot handle {span.name} for customer alice@example.com")
        return Output.of(batch)


@register_processor("explode", ExplodeConfig)
def _create_explode(config: ExplodeConfig, context: ComponentContext) -> Processor:
    return ExplodingProcessor(config.trigger)


def _raw_trace_request(name: str, trace_byte: int = 1) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "raw"
    span = rs.scope_spans.add().spans.add()
    span.name = name
    span.trace_id = bytes([trace_byte]) * 16
    span.span_id = bytes([trace_byte]) * 8
    span.start_time_unix_nano = 1
    span.end_time_unix_nano = 2
    return req


def _export(endpoint: str, req: ExportTraceServiceRequest) -> bytes:
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        return call(req.SerializeToString(), timeout=10)  # type: ignore[no-any-return]


def test_processor_failure_dead_letters_batch_and_keeps_serving(sink: OtlpSink, tmp_path: Path) -> None:
    cfg = gateway_yaml(
        tmp_path / "data",
        exporter=otlp_exporter_yaml(sink.grpc_endpoint),
        processors="{explode: {}}",
        pipeline_processors="[explode]",
        metrics_processors="[]",
    )
    with running_gateway(cfg) as gw:
        with pytest.raises(grpc.RpcError) as err:
            _export(gw.grpc_endpoint, _raw_trace_request("boom"))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "explode" in (err.value.details() or "")
        assert "alice@example.com" not in (err.value.details() or "")
        _export(gw.grpc_endpoint, _raw_trace_request("fine", trace_byte=2))
        assert sink.wait_for(1, timeout=10)
        entries = gw.dlq.list()
        metrics = final_metrics(gw)
    assert [s.name for s in sink.spans()] == ["fine"]
    [entry] = entries
    assert entry.reason == "processor_error" and entry.source == "processor:explode" and entry.items == 1
    assert "alice@example.com" not in entry.detail
    _, stored = gw.dlq.load(entry.id)
    [(_, _, span)] = list(iter_spans(stored))  # type: ignore[arg-type]
    assert span.name == "boom" and not attributes.has(span.attributes, "touched"), (
        "DLQ holds the batch as received"
    )
    assert metric_value(metrics, "errorgate_received_items_total", signal="traces") == 2
    assert metric_value(metrics, "errorgate_exported_items_total", signal="traces") == 1
    assert (
        metric_value(
            metrics, "errorgate_dead_lettered_items_total", signal="traces", reason="processor_error"
        )
        == 1
    )
    assert metric_value(metrics, "errorgate_processor_failures_total", processor="explode") == 1


def test_resent_batch_is_acknowledged_but_forwarded_once(sink: OtlpSink, tmp_path: Path) -> None:
    cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(sink.grpc_endpoint))
    with running_gateway(cfg) as gw:
        req = _raw_trace_request("once")
        _export(gw.grpc_endpoint, req)
        _export(gw.grpc_endpoint, req)  # an upstream collector retrying after a timeout
        _export(gw.grpc_endpoint, _raw_trace_request("other", trace_byte=3))
        assert sink.wait_for(2, timeout=10)
        gw.stop()
        metrics = scrape_text(gw)
    assert sorted(s.name for s in sink.spans()) == ["once", "other"]
    assert metric_value(metrics, "errorgate_duplicate_batches_total", signal="traces") == 1
    assert metric_value(metrics, "errorgate_received_items_total", signal="traces") == 3
    assert metric_value(metrics, "errorgate_dropped_items_total", signal="traces", reason="duplicate") == 1
    assert metric_value(metrics, "errorgate_exported_items_total", signal="traces") == 2


def scrape_text(gw: object) -> str:
    from prometheus_client import generate_latest

    return generate_latest(gw.telemetry.registry).decode()  # type: ignore[attr-defined]


def test_health_endpoints_report_exporter_state(sink: OtlpSink, tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(sink.grpc_endpoint))
    with running_gateway(cfg) as gw:
        with urllib.request.urlopen(f"http://{gw.metrics_endpoint}/healthz") as r:
            assert json.loads(r.read())["status"] == "pass"
        with urllib.request.urlopen(f"http://{gw.metrics_endpoint}/readyz") as r:
            assert r.headers["Content-Type"] == "application/health+json"
            ready = json.loads(r.read())
        assert ready["status"] == "pass"
        assert ready["checks"]["exporter:otlp/out"]["circuit"] == "closed"
        with grpc.insecure_channel(gw.grpc_endpoint) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

        # Backend gone: the circuit opens, the queue still accepts -> "warn", not "fail".
        sink.stop()
        for i in range(8):
            _export(gw.grpc_endpoint, _raw_trace_request(f"during-outage-{i}", trace_byte=10 + i))
        status = ""
        for _ in range(100):
            with urllib.request.urlopen(f"http://{gw.metrics_endpoint}/readyz") as r:
                body = json.loads(r.read())
            status = body["status"]
            if status == "warn":
                break
            import time

            time.sleep(0.1)
        assert status == "warn"
        assert body["checks"]["exporter:otlp/out"]["circuit"] in ("open", "half_open")
        sink.start()
        assert sink.wait_for(8, timeout=20)


def test_processor_failures_replay_through_the_gateway_not_around_it(
    sink: OtlpSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from errorgate.cli import main
    from tests.support.gateway import free_port

    grpc_port = free_port()

    def config_file(trigger: str) -> Path:
        path = tmp_path / f"{trigger}.yaml"
        path.write_text(
            gateway_yaml(
                tmp_path / "data",
                exporter=otlp_exporter_yaml(sink.grpc_endpoint),
                processors=f"{{explode: {{trigger: {trigger}}}}}",
                pipeline_processors="[explode]",
                metrics_processors="[]",
                grpc_port=grpc_port,
            )
        )
        return path

    buggy, fixed = config_file("boom"), config_file("never")
    from errorgate.config import load_config

    with running_gateway(buggy.read_text()) as gw, pytest.raises(grpc.RpcError):
        _export(gw.grpc_endpoint, _raw_trace_request("boom"))
    assert main(["dlq", "replay", "--config", str(fixed), "--exporter", "otlp/out"]) == 1
    assert "only be replayed through the gateway" in capsys.readouterr().err
    assert sink.item_count() == 0, "nothing may bypass the processors"
    with running_gateway(fixed.read_text()) as gw:  # the processor bug is fixed
        assert main(["dlq", "replay", "--config", str(fixed)]) == 0
        assert sink.wait_for(1, timeout=10)
        [span] = sink.spans()
        assert span.name == "boom" and attributes.has(span.attributes, "touched"), (
            "went through the processor"
        )
        assert gw.dlq.list() == []
    assert load_config(fixed).service.data_dir == str(tmp_path / "data")
