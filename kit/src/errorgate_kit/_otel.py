"""Shared OpenTelemetry helpers: how the kit marks a span as failed, per the semantic conventions."""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, Status, StatusCode

SCOPE = "errorgate_kit"
_instruments: dict[tuple[int, str], metrics.Counter | metrics.UpDownCounter] = {}
_instruments_lock = threading.Lock()


def tracer() -> trace.Tracer:
    # Looked up on each use so a provider installed after import (tests, late setup) is honoured.
    return trace.get_tracer(SCOPE)


def meter() -> metrics.Meter:
    return metrics.get_meter(SCOPE)


def counter(name: str, description: str) -> metrics.Counter:
    instrument = _instrument(name, lambda m: m.create_counter(name, description=description))
    assert isinstance(instrument, metrics.Counter)
    return instrument


def up_down_counter(name: str, description: str) -> metrics.UpDownCounter:
    instrument = _instrument(name, lambda m: m.create_up_down_counter(name, description=description))
    assert isinstance(instrument, metrics.UpDownCounter)
    return instrument


def _instrument(
    name: str, create: Callable[[metrics.Meter], metrics.Counter | metrics.UpDownCounter]
) -> metrics.Counter | metrics.UpDownCounter:
    """One instrument per name and meter provider: the SDK warns on every re-creation, and
    policies (frozen dataclasses, many short-lived bulkheads) would otherwise create one per call."""
    key = (id(metrics.get_meter_provider()), name)
    with _instruments_lock:
        if key not in _instruments:
            _instruments[key] = create(meter())
        return _instruments[key]


def record_error(span: Span, exc: BaseException, error_type: str | None = None) -> None:
    """Mark ``span`` failed the way classify detects it: an ``exception`` event (type, message,
    stacktrace), status ERROR and ``error.type`` (semconv: the low-cardinality class)."""
    span.record_exception(exc)
    span.set_attribute("error.type", error_type or type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:256]))
