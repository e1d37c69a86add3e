"""Dropping items from OTLP requests in place: deleting runs of a repeated field only moves
pointers in C, where rebuilding the field would deep-copy every item that stays."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def keep_indices(container: Any, keep: list[int], n: int) -> None:
    """Delete every item of ``container`` (of length ``n``) whose index is not in ``keep`` (ascending)."""
    end = n
    for i in reversed(keep):  # from the end, so the indices still to visit stay valid
        if i + 1 < end:
            del container[i + 1 : end]
        end = i
    if end:
        del container[:end]


def prune(request: ExportTraceServiceRequest | ExportLogsServiceRequest) -> None:
    """``signals.prune_empty`` for traces and logs: the same result, deleting in place."""
    if isinstance(request, ExportTraceServiceRequest):
        _prune(request.resource_spans, "scope_spans", "spans")
    else:
        _prune(request.resource_logs, "scope_logs", "log_records")


def _prune(resources: Any, scopes_field: str, items_field: str) -> None:
    for r in range(len(resources) - 1, -1, -1):
        scopes = getattr(resources[r], scopes_field)
        for s in range(len(scopes) - 1, -1, -1):
            if not getattr(scopes[s], items_field):
                del scopes[s]
        if not scopes:
            del resources[r]
