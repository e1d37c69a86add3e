"""Decoding an OTLP export request from protobuf bytes, with errors that quote nothing of it.

Shared by the receivers (which decode what they must check before accepting) and the gateway
(which decodes a request the receiver handed over undecoded only when something needs the
decoded form: see ``errorgate.intake.proof``)."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from errorgate.signals import ExportRequest, Signal

REQUEST_NAMES = {
    Signal.TRACES: "ExportTraceServiceRequest",
    Signal.LOGS: "ExportLogsServiceRequest",
    Signal.METRICS: "ExportMetricsServiceRequest",
}


def decode(signal: Signal, data: bytes) -> ExportRequest:
    """Decode protobuf; raises ValueError with a PII-free message."""
    try:
        request = signal.parse(data)
    except (DecodeError, RuntimeError) as e:
        raise ValueError(f"cannot decode {REQUEST_NAMES[signal]}: {_decode_detail(e)}") from None
    if data and not request.ListFields():
        # Bytes that happen to parse as unknown fields only: nothing OTLP in them.
        raise ValueError(f"cannot decode {REQUEST_NAMES[signal]}: {len(data)} bytes with no OTLP content")
    return request


def _decode_detail(e: Exception) -> str:
    # upb's messages ("Error parsing message with type ...") carry no payload; keep them short.
    text = str(e) or type(e).__name__
    return text[:160]
