"""Structured error logging: trace/span id, ``service.name``, component and a pseudonymous user id
on every record (stdlib ``logging`` filter and structlog processors), exceptions as the semantic
conventions' ``exception.type`` / ``exception.message`` / ``exception.stacktrace`` (what classify's
log detection reads).

The user id is never logged: ``enduser.pseudo.id`` is HMAC-SHA256 of it under a service-held key,
so one user's lines join up without the id being recoverable from the logs::

    KEY = os.environb[b"USER_PSEUDONYM_KEY"]
    logging.getLogger().addFilter(ContextFilter("orders", component="checkout", key=KEY))
    with user_context("alice@example.com"):
        log.error("payment failed", exc_info=True)   # enduser.pseudo.id=5c1f…, never the address
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import traceback
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

PSEUDO_ID = "enduser.pseudo.id"
MIN_KEY_BYTES = 16
_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("errorgate_kit_user", default=None)


def pseudonymize(user_id: str, key: bytes) -> str:
    """Keyed, stable, not reversible without the key (a plain hash of an e-mail is guessable)."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]


@contextmanager
def user_context(user_id: str | None) -> Iterator[None]:
    """The acting user for the block's log lines (stored raw only in memory, pseudonymized on output)."""
    token = _user.set(user_id)
    try:
        yield
    finally:
        _user.reset(token)


def trace_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as lower-case hex, ("", "") without one."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return "", ""
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def exception_attributes(exc: BaseException) -> dict[str, str]:
    """Semantic-convention exception attributes of ``exc``."""
    return {
        "exception.type": type(exc).__qualname__,
        "exception.message": str(exc),
        "exception.stacktrace": "".join(traceback.format_exception(exc)),
    }


class ContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``service.name``, ``component``, ``enduser.pseudo.id`` and
    exception attributes to each record; drops a raw ``user_id`` passed in ``extra``."""

    def __init__(self, service_name: str, component: str = "", key: bytes | None = None) -> None:
        super().__init__()
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        self.service_name, self.component, self.key = service_name, component, key

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        fields["trace_id"], fields["span_id"] = trace_ids()
        fields["service.name"] = self.service_name
        fields.setdefault("component", self.component)
        raw = fields.pop("user_id", None) or _user.get()
        if raw is not None and self.key is not None:
            fields[PSEUDO_ID] = pseudonymize(str(raw), self.key)
        if record.exc_info and record.exc_info[1] is not None:
            fields.update(exception_attributes(record.exc_info[1]))
        return True


# ---------------------------------------------------------------------- structlog processors

EventDict = MutableMapping[str, Any]


def add_otel_context(_logger: object, _method: str, event: EventDict) -> EventDict:
    trace_id, span_id = trace_ids()
    if trace_id:
        event.setdefault("trace_id", trace_id)
        event.setdefault("span_id", span_id)
    return event


class AddService:
    def __init__(self, service_name: str, component: str = "") -> None:
        self.service_name, self.component = service_name, component

    def __call__(self, _logger: object, _method: str, event: EventDict) -> EventDict:
        event.setdefault("service.name", self.service_name)
        if self.component:
            event.setdefault("component", self.component)
        return event


class PseudonymizeUser:
    """Replaces ``user_id`` (or the ``user_context`` user) with ``enduser.pseudo.id``."""

    def __init__(self, key: bytes, field: str = "user_id") -> None:
        pseudonymize("", key)  # fail at configuration time on a short key, not on the first log line
        self.key, self.field = key, field

    def __call__(self, _logger: object, _method: str, event: EventDict) -> EventDict:
        raw = event.pop(self.field, None) or _user.get()
        if raw is not None:
            event[PSEUDO_ID] = pseudonymize(str(raw), self.key)
        return event


def add_exception_attributes(_logger: object, _method: str, event: EventDict) -> EventDict:
    """``exc_info=True`` (or an exception) → semconv exception attributes (put it before renderers)."""
    info = event.pop("exc_info", None)
    exc: BaseException | None = None
    if isinstance(info, BaseException):
        exc = info
    elif isinstance(info, tuple) and len(info) == 3:
        exc = info[1]
    elif info is True:
        import sys

        exc = sys.exc_info()[1]
    if exc is not None:
        event.update(exception_attributes(exc))
    return event
