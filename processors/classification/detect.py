"""Error detection following the OpenTelemetry semantic conventions.

Spans: status ERROR; ``http.response.status_code`` 5xx (4xx only on CLIENT spans);
``rpc.grpc.status_code`` / ``rpc.status_code`` (any non-OK on clients, the server-side subset
UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS on servers);
``error.type``; ``exception`` events. A status explicitly set to OK is final (the spec says
instrumentation must not override it), so such spans are healthy whatever else they carry.
Logs: severity ≥ ERROR (17) or ``exception.*`` attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from errorgate.attributes import AttrValue, to_dict, to_python

GRPC_CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
GRPC_SERVER_ERRORS = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
SEVERITY_ERROR = 17  # SeverityNumber ERROR
_ERROR_TEXTS = frozenset({"ERROR", "ERR", "FATAL", "CRITICAL", "CRIT", "ALERT", "EMERGENCY", "PANIC"})

Attrs = Mapping[str, AttrValue]


@dataclass(frozen=True)
class ErrorInfo:
    """What was wrong, as far as the item itself says (no classification yet)."""

    error_type: str
    message: str = ""
    stacktrace: str = ""
    http_status: int | None = None
    rpc_code: str | None = None  # gRPC code name, e.g. "UNAVAILABLE"


def http_status(attrs: Attrs) -> int | None:
    value = attrs.get("http.response.status_code", attrs.get("http.status_code"))
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def rpc_code(attrs: Attrs) -> str | None:
    """gRPC status code name from ``rpc.grpc.status_code`` (int) or ``rpc.status_code`` / the newer
    ``rpc.response.status_code`` (name or int)."""
    for key in ("rpc.response.status_code", "rpc.status_code", "rpc.grpc.status_code"):
        value = attrs.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            return GRPC_CODES[value] if 0 <= value < len(GRPC_CODES) else str(value)
        text = str(value).strip().upper()
        if text.isdigit():
            n = int(text)
            return GRPC_CODES[n] if n < len(GRPC_CODES) else text
        return text
    return None


def _exception_event(span: Span) -> Attrs | None:
    for event in span.events:
        if event.name == "exception":
            return to_dict(event.attributes)
    return None


def detect_span(span: Span, attrs: Attrs | None = None) -> ErrorInfo | None:
    """The error a span reports, or None for a healthy span."""
    if span.status.code == Status.STATUS_CODE_OK:
        return None
    attrs = to_dict(span.attributes) if attrs is None else attrs
    is_client = span.kind == Span.SPAN_KIND_CLIENT
    is_server = span.kind == Span.SPAN_KIND_SERVER
    status = http_status(attrs)
    code = rpc_code(attrs)
    exc = _exception_event(span)
    error_type_attr = str(attrs.get("error.type") or "")
    failed = span.status.code == Status.STATUS_CODE_ERROR
    failed = failed or (status is not None and (status >= 500 or (is_client and 400 <= status < 500)))
    if code is not None and code != "OK":
        failed = failed or not is_server or code in GRPC_SERVER_ERRORS
    failed = failed or bool(error_type_attr) or exc is not None
    if not failed:
        return None
    exc = exc or {}
    exc_type = str(exc.get("exception.type") or "")
    error_type = exc_type or error_type_attr
    if not error_type and code is not None and code != "OK":
        error_type = f"rpc.{code}"
    if not error_type and status is not None and status >= 400:
        error_type = f"http.{status}"
    return ErrorInfo(
        error_type=error_type or "span.status_error",
        message=str(exc.get("exception.message") or span.status.message or ""),
        stacktrace=str(exc.get("exception.stacktrace") or ""),
        http_status=status,
        rpc_code=code,
    )


def detect_log(record: LogRecord, attrs: Attrs | None = None) -> ErrorInfo | None:
    """The error a log record reports, or None."""
    attrs = to_dict(record.attributes) if attrs is None else attrs
    exc_type = str(attrs.get("exception.type") or "")
    exc_message = str(attrs.get("exception.message") or "")
    stacktrace = str(attrs.get("exception.stacktrace") or "")
    severe = record.severity_number >= SEVERITY_ERROR or (
        record.severity_number == 0 and record.severity_text.strip().upper() in _ERROR_TEXTS
    )
    if not severe and not exc_type and not exc_message and not stacktrace:
        return None
    body = to_python(record.body) if record.HasField("body") else None
    message = exc_message or (body if isinstance(body, str) else "")
    error_type = exc_type or str(attrs.get("error.type") or "") or "log.error"
    return ErrorInfo(
        error_type=error_type,
        message=message,
        stacktrace=stacktrace,
        http_status=http_status(attrs),
        rpc_code=rpc_code(attrs),
    )
