"""logging: every record carries trace/span id, service.name, component and a keyed pseudonym of
the user (never the raw id), and exceptions as semconv attributes; the same for structlog."""

from __future__ import annotations

import json
import logging

import pytest
import structlog
from errorgate_kit.logging import (
    AddService,
    ContextFilter,
    PseudonymizeUser,
    add_exception_attributes,
    add_otel_context,
    pseudonymize,
    user_context,
)
from opentelemetry import trace

KEY = b"k" * 32


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger() -> tuple[logging.Logger, Collect]:
    log = logging.getLogger("kit-test")
    log.propagate = False
    handler = Collect()
    handler.addFilter(ContextFilter("orders", component="checkout", key=KEY))
    log.handlers = [handler]
    return log, handler


def test_stdlib_records_carry_context_and_pseudonym_never_the_user(logger) -> None:
    log, handler = logger
    with trace.get_tracer("t").start_as_current_span("op") as span, user_context("alice@example.com"):
        try:
            raise TimeoutError("payments timed out")
        except TimeoutError:
            log.error("payment failed", exc_info=True)
    fields = handler.records[0].__dict__
    ctx = span.get_span_context()
    assert fields["trace_id"] == f"{ctx.trace_id:032x}" and fields["span_id"] == f"{ctx.span_id:016x}"
    assert fields["service.name"] == "orders" and fields["component"] == "checkout"
    assert fields["enduser.pseudo.id"] == pseudonymize("alice@example.com", KEY)
    assert "alice" not in json.dumps({k: str(v) for k, v in fields.items() if k != "exc_info"})
    assert fields["exception.type"] == "TimeoutError" and "timed out" in fields["exception.message"]
    assert "Traceback" in fields["exception.stacktrace"]


def test_raw_user_id_in_extra_is_replaced(logger) -> None:
    log, handler = logger
    log.warning("login", extra={"user_id": "bob"})
    fields = handler.records[0].__dict__
    assert "user_id" not in fields and fields["enduser.pseudo.id"] == pseudonymize("bob", KEY)


def test_pseudonym_is_keyed_stable_and_refuses_weak_keys() -> None:
    assert pseudonymize("bob", KEY) == pseudonymize("bob", KEY) != pseudonymize("bob", b"j" * 32)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pseudonymize("bob", b"short")
    with pytest.raises(ValueError):
        ContextFilter("svc", key=b"short")


def test_structlog_processors() -> None:
    captured: list[dict] = []

    def capture(_logger, _method, event):  # type: ignore[no-untyped-def]
        captured.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[
            add_otel_context,
            AddService("orders", "checkout"),
            PseudonymizeUser(KEY),
            add_exception_attributes,
            capture,
        ],
    )
    log = structlog.get_logger()
    with trace.get_tracer("t").start_as_current_span("op"):
        try:
            {}["sku"]
        except KeyError:
            log.error("lookup failed", user_id="carol", exc_info=True)
    structlog.reset_defaults()
    event = captured[0]
    assert event["service.name"] == "orders" and len(event["trace_id"]) == 32
    assert event["enduser.pseudo.id"] == pseudonymize("carol", KEY) and "user_id" not in event
    assert event["exception.type"] == "KeyError"
