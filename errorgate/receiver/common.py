"""Pieces shared by the gRPC and HTTP receivers: the Receiver protocol, endpoint parsing,
decoding, export responses and the fixed set of refusal reasons (metric label values)."""

from __future__ import annotations

import ssl
from typing import Protocol

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from errorgate.config import ConfigError, TLSServerConfig
from errorgate.intake.contract import AcceptResult
from errorgate.signals import Signal

# Reasons for refusing a whole request: the values of errorgate_rejected_requests_total{reason}.
UNAUTHENTICATED = "unauthenticated"
TOO_LARGE = "too_large"
MALFORMED = "malformed"
BACKPRESSURE = "backpressure"
PROCESSING_FAILED = "processing_failed"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
INTERNAL = "internal"
TIMEOUT = "timeout"  # HTTP: headers or body not received within their timeout
TOO_MANY_CONNECTIONS = "too_many_connections"  # HTTP: a connection over max_connections
# All of them: each receiver's counters exist at 0 from start-up, so rate() sees the first refusal.
REJECTION_REASONS = (
    UNAUTHENTICATED,
    TOO_LARGE,
    MALFORMED,
    BACKPRESSURE,
    PROCESSING_FAILED,
    UNSUPPORTED_MEDIA_TYPE,
    INTERNAL,
    TIMEOUT,
    TOO_MANY_CONNECTIONS,
)

MIB = 1024 * 1024


class Receiver(Protocol):
    protocol: str  # "grpc" or "http"

    @property
    def endpoint(self) -> str:
        """host:port actually bound (after ``start``)."""
        ...

    def start(self) -> int:
        """Bind and serve in background threads; returns the bound port."""
        ...

    def stop(self, grace: float) -> None:
        """Stop accepting, give in-flight requests up to ``grace`` seconds, then close."""
        ...


class OtherEncoding(bytes):
    """A received body that is not the protobuf encoding (OTLP/JSON). Passed to the intake as
    ``raw`` for duplicate detection; the subclass tells it not to forward these bytes as protobuf."""


def parse_endpoint(endpoint: str, key_path: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' (all interfaces) -> (host, port)."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{key_path}: expected host:port, got {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port_text)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def export_response(
    signal: Signal, result: AcceptResult
) -> ExportTraceServiceResponse | ExportLogsServiceResponse | ExportMetricsServiceResponse:
    n, msg = result.rejected_items, result.error_message
    if signal is Signal.TRACES:
        if n or msg:
            return ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=n, error_message=msg)
            )
        return ExportTraceServiceResponse()
    if signal is Signal.LOGS:
        if n or msg:
            return ExportLogsServiceResponse(
                partial_success=ExportLogsPartialSuccess(rejected_log_records=n, error_message=msg)
            )
        return ExportLogsServiceResponse()
    if n or msg:
        return ExportMetricsServiceResponse(
            partial_success=ExportMetricsPartialSuccess(rejected_data_points=n, error_message=msg)
        )
    return ExportMetricsServiceResponse()


def size_limit_message(what: str, size: int | None, limit: int, key: str, configured: float) -> str:
    got = f"{size} bytes" if size is not None else "more"
    return f"{what} is {got}, over the limit of {limit} bytes ({key}={configured:g})"


def server_ssl_context(tls: TLSServerConfig, key_path: str) -> ssl.SSLContext:
    """TLS for the HTTP receiver; client certificates are required when client_ca_file is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{key_path}.tls.cert_file/key_file: cannot load {tls.cert_file}: {e}") from None
    if tls.client_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"{key_path}.tls.client_ca_file: cannot load {tls.client_ca_file}: {e}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
