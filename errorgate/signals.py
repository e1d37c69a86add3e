"""The unit of work that flows through errorgate: one OTLP export request of one signal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

ExportRequest: TypeAlias = ExportTraceServiceRequest | ExportLogsServiceRequest | ExportMetricsServiceRequest

# Batch.notes key: ``batch.request.SerializeToString()`` as it was when the note was set. The
# pipeline sets it for a first processor that asks (``reads_wire_note``), a processor that
# releases held items may set it on them; whoever reads it pops it, as it is void once the
# request changes. (Unlike delivery's SERIALIZED_NOTE it never reaches the exporters.)
WIRE_NOTE = "_errorgate_wire"
# Batch.notes key: the trace ids (bytes) of the spans in the batch that ``classify`` found failing
# (status ERROR or a fingerprint it set), as a frozenset. Set by classify on trace batches, read
# by later stages (``sample``) to skip their own search for errors; void if the request changes
# in a way that adds failing spans (only classify does), so stages must treat it as optional.
ERROR_TRACES_NOTE = "_errorgate_error_traces"


class Signal(str, Enum):
    TRACES = "traces"
    LOGS = "logs"
    METRICS = "metrics"

    def new_request(self) -> ExportRequest:
        return _REQUEST_TYPES[self]()

    def parse(self, data: bytes) -> ExportRequest:
        """Decode a serialized export request; raises google.protobuf.message.DecodeError."""
        request = self.new_request()
        request.ParseFromString(data)
        return request

    @classmethod
    def of(cls, request: ExportRequest) -> Signal:
        for signal, req_type in _REQUEST_TYPES.items():
            if isinstance(request, req_type):
                return signal
        raise TypeError(f"not an OTLP export request: {type(request).__name__}")


_REQUEST_TYPES: dict[Signal, type[ExportRequest]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}


@dataclass
class Batch:
    """One export request travelling through a pipeline.

    Processors mutate ``request`` in place or replace it; ``context`` carries
    per-request facts that are not telemetry (where it came from, when).
    """

    signal: Signal
    request: ExportRequest
    received_at: float = field(default_factory=time.time)
    receiver: str = ""
    tenant: str = ""
    # Free-form annotations processors may leave for later processors (never exported).
    notes: dict[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, request: ExportRequest, **kwargs: object) -> Batch:
        return cls(Signal.of(request), request, **kwargs)  # type: ignore[arg-type]

    def item_count(self) -> int:
        return count_items(self.request)

    def is_empty(self) -> bool:
        return self.item_count() == 0


def count_items(request: ExportRequest) -> int:
    """Spans, log records or metric data points in a request (the Collector's item counting)."""
    if isinstance(request, ExportTraceServiceRequest):
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if isinstance(request, ExportLogsServiceRequest):
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    return sum(
        metric_point_count(m)
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )


def metric_point_count(metric: Metric) -> int:
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


def iter_spans(request: ExportTraceServiceRequest) -> Iterator[tuple[ResourceSpans, ScopeSpans, Span]]:
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, ss, span


def iter_log_records(
    request: ExportLogsServiceRequest,
) -> Iterator[tuple[ResourceLogs, ScopeLogs, LogRecord]]:
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                yield rl, sl, record


def iter_metrics(
    request: ExportMetricsServiceRequest,
) -> Iterator[tuple[ResourceMetrics, ScopeMetrics, Metric]]:
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                yield rm, sm, metric


def prune_empty(request: ExportRequest) -> None:
    """Remove scope and resource containers left empty after items were dropped."""
    if isinstance(request, ExportTraceServiceRequest):
        for rs in request.resource_spans:
            keep = [ss for ss in rs.scope_spans if ss.spans]
            if len(keep) != len(rs.scope_spans):
                _replace(rs.scope_spans, keep)
        _replace(request.resource_spans, [rs for rs in request.resource_spans if rs.scope_spans])
    elif isinstance(request, ExportLogsServiceRequest):
        for rl in request.resource_logs:
            keep_l = [sl for sl in rl.scope_logs if sl.log_records]
            if len(keep_l) != len(rl.scope_logs):
                _replace(rl.scope_logs, keep_l)
        _replace(request.resource_logs, [rl for rl in request.resource_logs if rl.scope_logs])
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                keep_m = [m for m in sm.metrics if metric_point_count(m)]
                if len(keep_m) != len(sm.metrics):
                    _replace(sm.metrics, keep_m)
            keep_s = [sm for sm in rm.scope_metrics if sm.metrics]
            if len(keep_s) != len(rm.scope_metrics):
                _replace(rm.scope_metrics, keep_s)
        _replace(request.resource_metrics, [rm for rm in request.resource_metrics if rm.scope_metrics])


def _replace(container, items: list) -> None:  # type: ignore[no-untyped-def]
    if len(items) == len(container):
        return
    copies = [type(i)() for i in items]
    for dst, src in zip(copies, items, strict=True):
        dst.CopyFrom(src)
    del container[:]
    container.extend(copies)


def copy_request(request: ExportRequest) -> ExportRequest:
    """A deep copy (protobuf CopyFrom, done in C)."""
    copy = type(request)()
    copy.CopyFrom(request)  # type: ignore[arg-type]
    return copy
