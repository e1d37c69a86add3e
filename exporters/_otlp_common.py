"""Shared bits of the OTLP senders: service paths, response types, partial_success reading."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from errorgate.component import ExportResult
from errorgate.signals import Batch, Signal

GRPC_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
HTTP_PATHS = {Signal.TRACES: "/v1/traces", Signal.LOGS: "/v1/logs", Signal.METRICS: "/v1/metrics"}
RESPONSE_TYPES: dict[Signal, Any] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
_REJECTED_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.LOGS: "rejected_log_records",
    Signal.METRICS: "rejected_data_points",
}


def serialized(batch: Batch) -> bytes:
    from errorgate.delivery.exporter import SERIALIZED_NOTE

    data = batch.notes.get(SERIALIZED_NOTE)
    return data if isinstance(data, bytes) else batch.request.SerializeToString()


def success_from_response(signal: Signal, response: Any) -> ExportResult:
    """ExportResult.ok carrying partial_success rejections (the backend's message is not kept:
    it may quote payload values)."""
    if response is None or not response.HasField("partial_success"):
        return ExportResult.ok()
    rejected = int(getattr(response.partial_success, _REJECTED_FIELD[signal]))
    return ExportResult.ok(rejected_items=rejected, reason="partial_success" if rejected else "")
