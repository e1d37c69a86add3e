"""The unit of work that flows through errorgate: one OTLP export request of one signal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeAlias

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
# Batch.notes key: True when the request as received held no "errorgate." text at all, i.e. no
# stage of an upstream errorgate tagged it. Set by a stage that has the received bytes at hand
# (classify, from WIRE_NOTE); later stages may then skip searching for tags of their own kind
# (``sample``: an adjusted count already on an item), as long as no stage before them adds such
# tags (classify adds only error tags). Optional: absent means "search".
NO_UPSTREAM_TAGS_NOTE = "_errorgate_no_upstream_tags"


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
        return not has_items(self.request)

    def parsed_request(self) -> ExportRequest | None:
        """The request if it exists as an object already (None: only its bytes, not parsed)."""
        return self.request


class WireBatch(Batch):
    """A batch made from its serialized request, parsed on the first read of ``request``: a
    stage that works on the bytes (``WIRE_NOTE``; the processor worker's stage) never pays for
    the parse. Raises DecodeError then if the bytes do not decode."""

    def __init__(self, signal: Signal, data: bytes, **kwargs: Any) -> None:
        self._data = data
        self._parsed: ExportRequest | None = None
        super().__init__(signal, None, **kwargs)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def request(self) -> ExportRequest:
        if self._parsed is None:
            self._parsed = self.signal.parse(self._data)
        return self._parsed

    @request.setter
    def request(self, value: ExportRequest | None) -> None:
        if value is not None:  # (the dataclass __init__ assigns None)
            self._parsed = value

    def parsed_request(self) -> ExportRequest | None:
        return self._parsed


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


def has_items(request: ExportRequest) -> bool:
    """Whether ``request`` holds any item: stops at the first non-empty container, where
    ``count_items`` visits them all (``Output.of`` asks this of every batch it passes on)."""
    if isinstance(request, ExportTraceServiceRequest):
        return any(ss.spans for rs in request.resource_spans for ss in rs.scope_spans)
    if isinstance(request, ExportLogsServiceRequest):
        return any(sl.log_records for rl in request.resource_logs for sl in rl.scope_logs)
    return any(
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
    """Remove scope and resource containers left empty after items were dropped (and metrics
    without data points), in place: deleting from a repeated field only moves pointers in C,
    and the containers that stay are the same objects as before."""
    if isinstance(request, ExportTraceServiceRequest):
        _prune(request.resource_spans, "scope_spans", "spans")
    elif isinstance(request, ExportLogsServiceRequest):
        _prune(request.resource_logs, "scope_logs", "log_records")
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                metrics = sm.metrics
                for i in range(len(metrics) - 1, -1, -1):
                    if not metric_point_count(metrics[i]):
                        del metrics[i]
        _prune(request.resource_metrics, "scope_metrics", "metrics")


def _prune(resources: Any, scopes_field: str, items_field: str) -> None:
    for r in range(len(resources) - 1, -1, -1):  # from the end: the indices to visit stay valid
        scopes = getattr(resources[r], scopes_field)
        for s in range(len(scopes) - 1, -1, -1):
            if not getattr(scopes[s], items_field):
                del scopes[s]
        if not scopes:
            del resources[r]


def copy_request(request: ExportRequest) -> ExportRequest:
    """A deep copy (protobuf CopyFrom, done in C)."""
    copy = type(request)()
    copy.CopyFrom(request)  # type: ignore[arg-type]
    return copy
