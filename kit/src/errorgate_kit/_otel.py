"""Shared OpenTelemetry helpers: how the kit marks a span as failed, per the semantic conventions."""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

SCOPE = "errorgate_kit"


def tracer() -> trace.Tracer:
    # Looked up on each use so a provider installed after import (tests, late setup) is honoured.
    return trace.get_tracer(SCOPE)


def meter() -> metrics.Meter:
    return metrics.get_meter(SCOPE)


def record_error(span: Span, exc: BaseException, error_type: str | None = None) -> None:
    """Mark ``span`` failed the way classify detects it: an ``exception`` event (type, message,
    stacktrace), status ERROR and ``error.type`` (semconv: the low-cardinality class)."""
    span.record_exception(exc)
    span.set_attribute("error.type", error_type or type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
