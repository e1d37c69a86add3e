"""Builders shared by the classify tests: protobuf spans/logs with explicit timestamps,
the processor built through its registered factory, and attribute/metric readers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import errorgate.processors  # noqa: F401  (registers the factories)
from errorgate.attributes import set_value, to_dict
from errorgate.component import PROCESSORS, ComponentContext, Processor
from errorgate.signals import Batch, iter_log_records, iter_spans
from errorgate.telemetry import Telemetry

SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
T0 = 1_750_000_000.0  # a fixed telemetry time (seconds), far from "now": windows must follow the data


def make_classify(tmp_path: Path, **settings: Any) -> tuple[Processor, Telemetry]:
    factory = PROCESSORS.get("classify")
    assert factory is not None
    telemetry = Telemetry()
    context = ComponentContext(
        component_id="classify", data_dir=tmp_path, telemetry=telemetry, logger=logging.getLogger("test")
    )
    return factory.create(factory.config_model.model_validate(settings), context), telemetry


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


_ids = iter(range(1, 10**9))


def new_id() -> int:
    return next(_ids)


@dataclass
class S:
    """A span to build: service + the protobuf fields tests care about."""

    service: str
    name: str
    trace: int
    span: int
    parent: int = 0
    kind: int = SERVER
    end: float = T0  # seconds
    error: bool = False
    message: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    exception: tuple[str, str, str] | None = None  # type, message, stacktrace
    version: str = "1.0.0"

    def proto(self) -> Span:
        span = Span(
            trace_id=tid(self.trace),
            span_id=sid(self.span),
            parent_span_id=sid(self.parent) if self.parent else b"",
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            start_time_unix_nano=int((self.end - 0.05) * 1e9),
            end_time_unix_nano=int(self.end * 1e9),
        )
        for k, v in self.attrs.items():
            set_value(span.attributes, k, v)
        if self.error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = self.message
        if self.exception:
            event = span.events.add(name="exception", time_unix_nano=span.end_time_unix_nano)
            for k, v in zip(
                ("exception.type", "exception.message", "exception.stacktrace"), self.exception, strict=True
            ):
                set_value(event.attributes, k, v)
        return span


def trace_batch(spans: Iterable[S], **notes: Any) -> Batch:
    request = ExportTraceServiceRequest()
    by_resource: dict[tuple[str, str], Any] = {}
    for s in spans:
        key = (s.service, s.version)
        if key not in by_resource:
            rs = request.resource_spans.add()
            set_value(rs.resource.attributes, "service.name", s.service)
            set_value(rs.resource.attributes, "service.version", s.version)
            by_resource[key] = rs.scope_spans.add()
        by_resource[key].spans.append(s.proto())
    return Batch.of(request, notes=dict(notes))


def log_batch(service: str, records: Iterable[LogRecord]) -> Batch:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    set_value(rl.resource.attributes, "service.name", service)
    rl.scope_logs.add().log_records.extend(records)
    return Batch.of(request)


def log(body: str, at: float, severity: int = 17, trace: int = 0, span: int = 0, **attrs: Any) -> LogRecord:
    record = LogRecord(
        time_unix_nano=int(at * 1e9), severity_number=severity, body=AnyValue(string_value=body)
    )  # type: ignore[arg-type]
    if trace:
        record.trace_id, record.span_id = tid(trace), sid(span)
    for k, v in attrs.items():
        set_value(record.attributes, k, v)
    return record


def run(processor: Processor, batch: Batch) -> dict[tuple[int, int], dict[str, Any]]:
    """Process one batch; return each output span's attributes keyed by (trace, span) number."""
    out = processor.process(batch)
    result: dict[tuple[int, int], dict[str, Any]] = {}
    for b in out.batches:
        for _, _, span in iter_spans(b.request):  # type: ignore[arg-type]
            result[(int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"))] = to_dict(
                span.attributes
            )
    return result


def run_logs(processor: Processor, batch: Batch) -> list[dict[str, Any]]:
    out = processor.process(batch)
    return [to_dict(r.attributes) for b in out.batches for _, _, r in iter_log_records(b.request)]  # type: ignore[arg-type]


def samples(telemetry: Telemetry, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of metric ``name`` in the Prometheus text output."""
    text = generate_latest(telemetry.registry).decode()
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), sample.value))
    return found


def total(telemetry: Telemetry, name: str, **labels: str) -> float:
    return sum(v for lbl, v in samples(telemetry, name) if all(lbl.get(k) == x for k, x in labels.items()))
