"""The ``otlp`` receiver's settings (``receivers.otlp``)."""

from __future__ import annotations

from pydantic import Field

from errorgate.component import ComponentConfig
from errorgate.config import AuthConfig, TLSServerConfig

__all__ = [
    "AuthConfig",
    "GrpcProtocolConfig",
    "HttpProtocolConfig",
    "OtlpReceiverConfig",
    "ProtocolsConfig",
    "TLSServerConfig",
    "ValidationConfig",
]


class GrpcProtocolConfig(ComponentConfig):
    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size_mib: float = Field(default=16, gt=0)
    max_concurrent_streams: int = Field(default=64, ge=1)
    tls: TLSServerConfig | None = None


class HttpProtocolConfig(ComponentConfig):
    endpoint: str = "127.0.0.1:4318"
    max_request_body_size_mib: float = Field(default=16, gt=0)
    tls: TLSServerConfig | None = None
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


class OtlpReceiverConfig(ComponentConfig):
    protocols: ProtocolsConfig = Field(
        default_factory=lambda: ProtocolsConfig(grpc=GrpcProtocolConfig(), http=HttpProtocolConfig())
    )
    auth: AuthConfig | None = None
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
