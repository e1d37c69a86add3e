"""OTLP receivers (gRPC and HTTP). Transport only: auth, size limits, decompression and
decoding happen here; everything after decoding is ``errorgate.intake.contract``'s job."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import Field

from errorgate.component import ComponentConfig, ComponentContext, Factory
from errorgate.config import AuthConfig, TLSServerConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from errorgate.intake.contract import Intake
    from errorgate.receiver.common import Receiver
    from errorgate.telemetry import Telemetry


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


def build_receivers(
    receiver_id: str, config: OtlpReceiverConfig, intake: Intake, logger: logging.Logger, telemetry: Telemetry
) -> list[Receiver]:
    """The receivers one ``otlp`` config section asks for (not started yet).

    Raises ``ConfigError`` (naming the key) for unusable endpoints, TLS files or auth tokens.
    """
    from errorgate.receiver.grpc_server import OtlpGrpcReceiver
    from errorgate.receiver.http_server import OtlpHttpReceiver

    receivers: list[Receiver] = []
    if config.protocols.grpc is not None:
        receivers.append(
            OtlpGrpcReceiver(receiver_id, config.protocols.grpc, config.auth, intake, logger, telemetry)
        )
    if config.protocols.http is not None:
        receivers.append(
            OtlpHttpReceiver(receiver_id, config.protocols.http, config.auth, intake, logger, telemetry)
        )
    return receivers


def create_otlp_receiver(
    config: OtlpReceiverConfig, context: ComponentContext
) -> Callable[[Intake], list[Receiver]]:
    """The receivers of one ``otlp`` section, built once the gateway can take what they receive."""
    return lambda intake: build_receivers(
        context.component_id, config, intake, context.logger, context.telemetry
    )


factory = Factory("otlp", OtlpReceiverConfig, create_otlp_receiver)
