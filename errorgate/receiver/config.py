"""The ``otlp`` receiver's settings (``receivers.otlp``)."""

from __future__ import annotations

from pydantic import Field

from errorgate.component import ComponentConfig
from errorgate.config import AuthConfig, Duration, TLSServerConfig

__all__ = [
    "AuthConfig",
    "GrpcProtocolConfig",
    "HttpProtocolConfig",
    "OtlpReceiverConfig",
    "ProtocolsConfig",
    "RequestLimitsConfig",
    "TLSServerConfig",
    "ValidationConfig",
]


class GrpcProtocolConfig(ComponentConfig):
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size_mib: float = Field(default=16, gt=0)
    max_concurrent_streams: int = Field(default=64, ge=1)
    tls: TLSServerConfig | None = None
    # Connections over this are closed by grpc before their handshake. A gRPC connection holds
    # no thread (grpc reads in C), only a socket and buffers, so the cap is about file
    # descriptors and memory: far above what one replica's clients need.
    max_connections: int = Field(default=1024, ge=1)
    # TCP accept to the end of the HTTP/2 (and TLS) handshake; grpc's own default is 120 s,
    # long enough for a client that never finishes to hold a connection for two minutes.
    handshake_timeout: Duration = Field(default=10.0, gt=0)
    # A connection without calls for this long is sent GOAWAY (clients reconnect on their next
    # call), so connections of clients that went away without closing them do not pile up.
    max_connection_idle: Duration = Field(default=300.0, gt=0)


class HttpProtocolConfig(ComponentConfig):
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size_mib: float = Field(default=16, gt=0)
    tls: TLSServerConfig | None = None
    # Each connection holds a thread while it is open, so slow clients are bounded in time
    # (the two timeouts) and in number (the cap).
    # The request line and headers, from the connection's start (between keep-alive requests:
    # from the next request's first byte). A TLS handshake, before them, has as long again.
    read_header_timeout: Duration = Field(default=10.0, gt=0)
    # From the end of the headers to the end of the body. SDK exporters give up on an export
    # after 10 s (OTEL_EXPORTER_OTLP_TIMEOUT), so a body still arriving later is awaited by no one.
    read_timeout: Duration = Field(default=10.0, gt=0)
    # Open connections (idle keep-alive ones included); a connection over the cap is answered
    # 503 with Retry-After (plain HTTP) or closed (TLS) by the accepting thread, holding none.
    max_connections: int = Field(default=256, ge=1)
    traces_url_path: str = "/v1/traces"
    logs_url_path: str = "/v1/logs"
    metrics_url_path: str = "/v1/metrics"


class ProtocolsConfig(ComponentConfig):
    grpc: GrpcProtocolConfig | None = None
    http: HttpProtocolConfig | None = None


class ValidationConfig(ComponentConfig):
    """Limits applied to every decoded item; items breaking them are rejected (partial_success)."""

    max_attribute_depth: int = Field(default=8, ge=1)
    max_string_length: int = Field(default=65536, ge=1)
    max_attributes: int = Field(default=1024, ge=1)


class RequestLimitsConfig(ComponentConfig):
    """Limits on a whole request, checked before it is decoded (refused with RESOURCE_EXHAUSTED /
    413 naming the key, nothing accepted). Decoding and processing cost per object, not per byte:
    an empty log record or resource entry is 2 bytes on the wire, so the size limit alone let
    2 MB of 1M empty log records cost the gateway 31 s and 1.3 GiB.

    SDKs send at most 512 items per export, the Collector's batch processor 8192 by default,
    errorgate's own batching 16384; a useful entry holds at least one item."""

    # Spans, log records or metric data points. 6x the largest default batch above; at the default
    # 16 MiB size limit it takes items under 168 bytes on average, smaller than real spans.
    max_items_per_request: int = Field(default=100_000, ge=1)
    # Resource entries (ResourceSpans/ResourceLogs/ResourceMetrics). A Collector batching one-item
    # requests of many senders sends one entry per item, 8192 by default: 2.4x room. Lower than
    # the item cap because an entry costs the gateway about 5 times an item (100000 one-item
    # entries: 4.7 s; 100000 items in one entry: 1.0 s).
    max_resources_per_request: int = Field(default=20_000, ge=1)
    # Scope entries (ScopeSpans/ScopeLogs/ScopeMetrics), all resources together; same reasoning.
    max_scopes_per_request: int = Field(default=20_000, ge=1)
    # OTLP/JSON bodies: nesting of objects and arrays. 64 leaves room for attribute values nested
    # far deeper than validation.max_attribute_depth (8) accepts (a value 8 deep sits about 40
    # levels down), and keeps every JSON request within the 100 message levels protobuf decoding
    # accepts, so nothing is taken in as JSON that the next hop (or the processor worker) could
    # not decode as protobuf.
    max_json_depth: int = Field(default=64, ge=16, le=100)


class OtlpReceiverConfig(ComponentConfig):
    protocols: ProtocolsConfig = Field(
        default_factory=lambda: ProtocolsConfig(grpc=GrpcProtocolConfig(), http=HttpProtocolConfig())
    )
    auth: AuthConfig | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    limits: RequestLimitsConfig = Field(default_factory=RequestLimitsConfig)
