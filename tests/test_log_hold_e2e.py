"""Logs follow their trace, in the real gateway: the OpenTelemetry SDK exports each log record as
it is emitted, before the spans of its trace have ended, as instrumented services do. The log
records wait for the trace's decision, so an INFO record of a failing trace is kept with it
(healthy traces are kept with probability 0 here) and an ERROR record of a failing span that
failed because its callee did is classified as cascading from the callee's service."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from errorgate import attributes
from tests.support.gateway import (
    GatewayProcess,
    final_metrics,
    free_port,
    gateway_yaml,
    metric_value,
    otlp_exporter_yaml,
    running_gateway,
    scrape,
)
from tests.support.otlp_sink import OtlpSink

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
PROCESSORS = "{classify: {}, sample: {decision_wait: 500ms, healthy_keep_probability: 0.0}, retention: {}}"


def _providers(service: str, endpoint: str) -> tuple[TracerProvider, LoggerProvider]:
    resource = Resource.create({"service.name": service})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True)))
    return tp, lp


def _run(tmp_path: Path, hold_logs: bool) -> tuple[dict[str, dict[str, object]], str]:
    processors = PROCESSORS if hold_logs else PROCESSORS.replace("0.0}", "0.0, hold_logs: false}")
    with OtlpSink() as sink:
        config = gateway_yaml(
            tmp_path / "data",
            exporter=otlp_exporter_yaml(sink.grpc_endpoint),
            processors=processors,
            pipeline_processors="[classify, sample, retention]",
            service_extra="  poll_interval: 50ms",
        )
        with running_gateway(config) as gw:
            providers = {s: _providers(s, gw.grpc_endpoint) for s in ("frontend", "checkout", "payments")}
            tracer = {s: tp.get_tracer("e2e") for s, (tp, _) in providers.items()}
            logger = {s: lp.get_logger("e2e") for s, (_, lp) in providers.items()}

            def log(service: str, severity: SeverityNumber, body: str) -> None:
                logger[service].emit(
                    body=body,
                    severity_number=severity,
                    severity_text=severity.name,
                    context=otel_context.get_current(),
                )

            log("frontend", SeverityNumber.INFO, "startup complete")  # no trace context
            with (
                tracer["frontend"].start_as_current_span("GET /checkout", kind=SpanKind.SERVER),
                tracer["checkout"].start_as_current_span("charge", kind=SpanKind.SERVER) as charge,
            ):
                log("checkout", SeverityNumber.INFO, "charging card")
                with tracer["payments"].start_as_current_span("authorize", kind=SpanKind.SERVER) as leaf:
                    leaf.set_status(Status(StatusCode.ERROR, "card processor timeout"))
                log("checkout", SeverityNumber.ERROR, "charge failed: authorize returned 503")
                charge.set_status(Status(StatusCode.ERROR, "authorize failed"))
            with tracer["frontend"].start_as_current_span("GET /", kind=SpanKind.SERVER):
                log("frontend", SeverityNumber.INFO, "home rendered")
            assert trace.get_current_span() is trace.INVALID_SPAN
            for tp, lp in providers.values():
                tp.shutdown()
                lp.shutdown()

            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if (
                    metric_value(scrape(gw.metrics_endpoint), "errorgate_sampled_items_total", signal="logs")
                    >= 4
                ):
                    break
                time.sleep(0.05)
            metrics = final_metrics(gw)
        records = {r.body.string_value: attributes.to_dict(r.attributes) for r in sink.log_records()}
    return records, metrics


def test_logs_wait_for_their_trace_decision_and_cascade(tmp_path: Path) -> None:
    records, metrics = _run(tmp_path, hold_logs=True)
    # The healthy trace's record went with its trace (probability 0); the rest arrived.
    assert set(records) == {"startup complete", "charging card", "charge failed: authorize returned 503"}
    info = records["charging card"]
    assert info["errorgate.sampling.adjusted_count"] == 1.0  # kept with its error trace, not thinned
    assert "errorgate.error.fingerprint" not in info
    error = records["charge failed: authorize returned 503"]
    assert error["errorgate.error.kind"] == "cascading"
    assert error["errorgate.error.origin_service"] == "payments"
    # Every record accounted for: 4 received = 3 exported + 1 dropped by sampling.
    assert metric_value(metrics, "errorgate_received_items_total", signal="logs") == 4
    assert metric_value(metrics, "errorgate_exported_items_total", signal="logs") == 3
    assert metric_value(metrics, "errorgate_dropped_items_total", signal="logs", reason="sampled") == 1
    assert metric_value(metrics, "errorgate_log_hold_requests") == 0


def test_without_the_hold_the_same_logs_are_decided_blind(tmp_path: Path) -> None:
    """What the hold fixes, shown on the same traffic with ``hold_logs: false``."""
    records, _ = _run(tmp_path, hold_logs=False)
    assert "charging card" not in records  # decided before its trace: thinned like a healthy one
    error = records["charge failed: authorize returned 503"]
    assert error["errorgate.error.kind"] != "cascading"
    assert "errorgate.error.origin_service" not in error


def _restart_config(tmp_path: Path, sink_endpoint: str, grpc_port: int, metrics_port: int, wait: str) -> Path:
    path = tmp_path / "errorgate.yaml"
    path.write_text(
        gateway_yaml(
            tmp_path / "data",
            exporter=otlp_exporter_yaml(sink_endpoint, queue_dir=tmp_path / "queue"),
            processors=f"{{classify: {{}}, sample: {{decision_wait: {wait}, healthy_keep_probability: 1.0}}}}",
            pipeline_processors="[classify, sample]",
            grpc_port=grpc_port,
            http_port=free_port(),
            metrics_port=metrics_port,
            service_extra="  poll_interval: 50ms",
        )
    )
    return path


def test_held_logs_survive_sigkill_and_arrive_after_the_restart(tmp_path: Path) -> None:
    """Acknowledged log records that were waiting for their trace are on disk: a SIGKILL loses
    none of them, and after the restart they arrive with their trace."""
    trace_id = (0xABCDEF).to_bytes(16, "big")
    spans = ExportTraceServiceRequest()
    rs = spans.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    span = rs.scope_spans.add().spans.add(name="charge", trace_id=trace_id, span_id=(1).to_bytes(8, "big"))
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000, 2_000
    logs = ExportLogsServiceRequest()
    rl = logs.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "checkout"
    records = rl.scope_logs.add().log_records
    for i in range(3):
        records.add(
            trace_id=trace_id, span_id=(1).to_bytes(8, "big"), severity_number=9
        ).body.string_value = f"step {i}"

    with OtlpSink() as sink:
        grpc_port, metrics_port = free_port(), free_port()
        config = _restart_config(tmp_path, sink.grpc_endpoint, grpc_port, metrics_port, "1h")
        gw = GatewayProcess(config, grpc_port, metrics_port).start()
        try:
            with grpc.insecure_channel(gw.grpc_endpoint) as channel:
                for method, request in ((TRACES, spans), (LOGS, logs)):
                    call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
                    call(request.SerializeToString(), timeout=10)  # acknowledged
            held = scrape(f"127.0.0.1:{metrics_port}")
            assert metric_value(held, "errorgate_log_hold_requests") == 1
            gw.kill()
            assert sink.log_records() == []  # held, not delivered
            _restart_config(tmp_path, sink.grpc_endpoint, grpc_port, metrics_port, "300ms")
            gw = GatewayProcess(config, grpc_port, metrics_port).start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(sink.log_records()) < 3:
                time.sleep(0.1)
        finally:
            gw.close()
        delivered = sorted(r.body.string_value for r in sink.log_records())
        assert [s.name for s in sink.spans()] == ["charge"]
    assert delivered == ["step 0", "step 1", "step 2"]
