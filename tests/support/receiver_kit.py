"""A minimal ``errorgate.intake.contract.Intake`` for receiver tests: records what it is given and can be
told to answer with partial success or raise the pipeline's exceptions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from errorgate import attributes
from errorgate.errors import Backpressure, InvalidRequest, ProcessingFailed
from errorgate.intake.contract import AcceptResult
from errorgate.otlp.decode import decode
from errorgate.signals import ExportRequest, Signal, count_items, iter_log_records, iter_metrics, iter_spans


@dataclass
class Accepted:
    signal: Signal
    request: ExportRequest
    raw: bytes | None
    receiver: str


@dataclass
class RecordingIntake:
    accepted: list[Accepted] = field(default_factory=list)
    result: AcceptResult = field(default_factory=AcceptResult)
    raise_next: list[Exception] = field(default_factory=list)
    ready: str = "pass"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def accept(
        self, signal: Signal, request: ExportRequest | None, *, raw: bytes | None, receiver: str
    ) -> AcceptResult:
        with self._lock:
            if self.raise_next:
                raise self.raise_next.pop(0)
            if request is None:  # undecoded protobuf body: decoding is the intake's, as in the gateway
                assert raw is not None
                try:
                    request = decode(signal, raw)
                except ValueError as e:
                    raise InvalidRequest(str(e)) from None
            self.accepted.append(Accepted(signal, request, raw, receiver))
            self._arrived.notify_all()
            return self.result

    def readiness(self) -> tuple[str, dict[str, object]]:
        return self.ready, {}

    # ---------------------------------------------------------------- test helpers

    def items(self, signal: Signal) -> int:
        with self._lock:
            return sum(count_items(a.request) for a in self.accepted if a.signal is signal)

    def wait_for(self, signal: Signal, n: int, timeout: float = 15.0) -> None:
        with self._lock:
            ok = self._arrived.wait_for(
                lambda: sum(count_items(a.request) for a in self.accepted if a.signal is signal) >= n, timeout
            )
        assert ok, f"expected {n} {signal.value} items, got {self.items(signal)}"

    def requests(self, signal: Signal) -> list[ExportRequest]:
        with self._lock:
            return [a.request for a in self.accepted if a.signal is signal]

    def clear(self) -> None:
        with self._lock:
            self.accepted.clear()


def backpressure(retry_after: float = 3.0) -> Backpressure:
    return Backpressure("export queue is full", retry_after=retry_after)


def processing_failed() -> ProcessingFailed:
    return ProcessingFailed("processor classify failed on the batch (dead-lettered)")


def invalid_request() -> InvalidRequest:
    return InvalidRequest("request has no resource")


# ---------------------------------------------------------------- real SDK telemetry


def sdk_spans(service: str = "checkout", n_children: int = 3) -> list[Any]:
    """Finished spans from the real OpenTelemetry SDK: a server span with children, an event,
    an error status and attributes of several types."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "deployment.environment": "test"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.receiver", "1.2.3")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "POST")
        root.set_attribute("http.response.status_code", 502)
        root.set_attribute("retry.ratio", 0.25)
        root.set_attribute("feature.flags", ["a", "b"])
        for i in range(n_children):
            with tracer.start_as_current_span(f"db.query {i}", kind=SpanKind.CLIENT) as child:
                child.set_attribute("db.system", "postgresql")
                child.set_attribute("db.rows", i)
                if i == n_children - 1:
                    child.add_event("exception", {"exception.type": "TimeoutError"})
                    child.set_status(StatusCode.ERROR, "statement timeout")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def sdk_logs(service: str = "checkout") -> list[Any]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("tests.receiver")
    logger.emit(
        body="payment declined",
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        attributes={"order.id": "o-17", "attempt": 3},
    )
    logger.emit(
        body={"event": "cart.updated", "items": 2},
        severity_number=SeverityNumber.INFO,
        attributes={"cart.size": 2},
    )
    provider.shutdown()
    return list(exporter.get_finished_logs())


def sdk_metrics(service: str = "checkout") -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
    meter = provider.get_meter("tests.receiver")
    counter = meter.create_counter("http.server.requests", unit="1")
    counter.add(5, {"http.route": "/cart"})
    counter.add(2, {"http.route": "/pay"})
    hist = meter.create_histogram("http.server.duration", unit="ms")
    for v in (3.0, 12.0, 250.0):
        hist.record(v, {"http.route": "/cart"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def span_view(request_or_spans: Any) -> dict[str, tuple[str, str, str, dict[str, Any], str]]:
    """span_id hex -> (name, trace_id hex, parent hex, attributes, service.name): comparable on both sides."""
    out: dict[str, tuple[str, str, str, dict[str, Any], str]] = {}
    if isinstance(request_or_spans, list):
        for s in request_or_spans:
            ctx = s.get_span_context()
            parent = f"{s.parent.span_id:016x}" if s.parent else ""
            attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in s.attributes.items()}
            out[f"{ctx.span_id:016x}"] = (
                s.name,
                f"{ctx.trace_id:032x}",
                parent,
                attrs,
                str(s.resource.attributes["service.name"]),
            )
        return out
    for req in request_or_spans.requests if hasattr(request_or_spans, "requests") else [request_or_spans]:
        for rs, _, span in iter_spans(req):
            service = str(attributes.get(rs.resource.attributes, "service.name"))
            out[span.span_id.hex()] = (
                span.name,
                span.trace_id.hex(),
                span.parent_span_id.hex(),
                attributes.to_dict(span.attributes),
                service,
            )
    return out


def received_span_view(intake: RecordingIntake) -> dict[str, tuple[str, str, str, dict[str, Any], str]]:
    out: dict[str, tuple[str, str, str, dict[str, Any], str]] = {}
    for req in intake.requests(Signal.TRACES):
        out.update(span_view(req))
    return out


def received_log_view(intake: RecordingIntake) -> list[tuple[Any, int, dict[str, Any], str]]:
    out = []
    for req in intake.requests(Signal.LOGS):
        for rl, _, rec in iter_log_records(req):  # type: ignore[arg-type]
            service = str(attributes.get(rl.resource.attributes, "service.name"))
            out.append(
                (
                    attributes.to_python(rec.body),
                    rec.severity_number,
                    attributes.to_dict(rec.attributes),
                    service,
                )
            )
    return out


def sdk_log_view(records: list[Any]) -> list[tuple[Any, int, dict[str, Any], str]]:
    out = []
    for r in records:
        lr = getattr(r, "log_record", r)
        resource = getattr(r, "resource", None) or lr.resource
        out.append(
            (
                lr.body,
                lr.severity_number.value,
                dict(lr.attributes or {}),
                str(resource.attributes["service.name"]),
            )
        )
    return out


def received_metric_view(intake: RecordingIntake) -> dict[tuple[str, str], Any]:
    """(metric name, route) -> value (sum) or (count, sum) (histogram)."""
    out: dict[tuple[str, str], Any] = {}
    for req in intake.requests(Signal.METRICS):
        for _, _, m in iter_metrics(req):  # type: ignore[arg-type]
            kind = m.WhichOneof("data")
            for dp in getattr(m, kind).data_points:
                route = str(attributes.get(dp.attributes, "http.route"))
                out[(m.name, route)] = dp.as_int if kind == "sum" else (dp.count, dp.sum)
    return out
