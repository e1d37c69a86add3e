"""sample + retention inside the real gateway: the OpenTelemetry SDK sends one trace from three
services (separate exports, the failing leaf first), errorgate assembles, samples and tags it,
a real OTLP sink receives it whole; healthy traces are dropped and counted."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from errorgate import attributes
from tests.support.gateway import gateway_yaml, metric_value, otlp_exporter_yaml, running_gateway, scrape
from tests.support.otlp_sink import OtlpSink


def _provider(service: str, endpoint: str) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return tp


def test_error_trace_from_three_services_kept_whole_and_tagged(tmp_path: Path) -> None:
    with OtlpSink() as sink:
        config = gateway_yaml(
            tmp_path / "data",
            exporter=otlp_exporter_yaml(sink.grpc_endpoint),
            processors="{sample: {decision_wait: 300ms, healthy_keep_probability: 0.0}, retention: {}}",
            pipeline_processors="[sample, retention]",
            service_extra="  poll_interval: 50ms",
        )
        with running_gateway(config) as gw:
            endpoint = gw.grpc_endpoint
            providers = {s: _provider(s, endpoint) for s in ("frontend", "checkout", "payments")}
            tracers = {s: tp.get_tracer("e2e") for s, tp in providers.items()}
            # Children end (and are exported) before their parents: the failing leaf arrives first.
            with tracers["frontend"].start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
                ctx = trace.set_span_in_context(root)
                with tracers["checkout"].start_as_current_span(
                    "charge", context=ctx, kind=SpanKind.SERVER
                ) as mid:
                    ctx2 = trace.set_span_in_context(mid)
                    with tracers["payments"].start_as_current_span("authorize", context=ctx2) as leaf:
                        leaf.set_status(Status(StatusCode.ERROR, "card processor timeout"))
            error_trace = root.get_span_context().trace_id.to_bytes(16, "big")
            healthy = []
            for _ in range(5):
                with tracers["frontend"].start_as_current_span("GET /") as s:
                    pass
                healthy.append(s.get_span_context().trace_id.to_bytes(16, "big"))
            for tp in providers.values():
                tp.shutdown()

            deadline = time.monotonic() + 15
            metrics = ""
            while time.monotonic() < deadline:
                metrics = scrape(gw.metrics_endpoint)
                decided = metric_value(metrics, "errorgate_sampled_items_total", signal="traces")
                if decided >= 8 and len(sink.spans()) >= 3:
                    break
                time.sleep(0.05)
        spans = sink.spans()
    assert sorted(s.name for s in spans) == ["GET /checkout", "authorize", "charge"]
    assert {s.trace_id for s in spans} == {error_trace}
    assert not {s.trace_id for s in spans} & set(healthy)
    for s in spans:
        assert attributes.get(s.attributes, "errorgate.sampling.adjusted_count") == 1.0
        # checkout and payments are pci+sox in the bundled catalog: an error there is audit-7y
    by_name = {s.name: s for s in spans}
    assert attributes.get(by_name["authorize"].attributes, "errorgate.retention.class") == "audit-7y"
    assert attributes.get(by_name["GET /checkout"].attributes, "errorgate.retention.class") == "ops-30d"
    assert (
        metric_value(
            metrics, "errorgate_sampled_items_total", signal="traces", decision="kept", reason="error"
        )
        == 3
    )
    assert metric_value(metrics, "errorgate_dropped_items_total", signal="traces", reason="sampled") == 5
