"""OTLP receivers (gRPC and HTTP). Transport only: auth, size limits, decompression and
decoding happen here; everything after decoding is ``errorgate.intake.contract``'s job."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from errorgate.component import ComponentContext, Factory
from errorgate.receiver.config import (
    GrpcProtocolConfig,
    HttpProtocolConfig,
    OtlpReceiverConfig,
    ProtocolsConfig,
    RequestLimitsConfig,
    ValidationConfig,
)
from errorgate.receiver.grpc_server import OtlpGrpcReceiver
from errorgate.receiver.http_server import OtlpHttpReceiver

__all__ = [
    "GrpcProtocolConfig",
    "HttpProtocolConfig",
    "OtlpReceiverConfig",
    "ProtocolsConfig",
    "RequestLimitsConfig",
    "ValidationConfig",
    "build_receivers",
    "factory",
]

if TYPE_CHECKING:
    from collections.abc import Callable

    from errorgate.intake.contract import Intake
    from errorgate.receiver.common import Receiver
    from errorgate.telemetry import Telemetry


def build_receivers(
    receiver_id: str, config: OtlpReceiverConfig, intake: Intake, logger: logging.Logger, telemetry: Telemetry
) -> list[Receiver]:
    """The receivers one ``otlp`` config section asks for (not started yet).

    Raises ``ConfigError`` (naming the key) for unusable endpoints, TLS files or auth tokens.
    """
    receivers: list[Receiver] = []
    if config.protocols.grpc is not None:
        receivers.append(
            OtlpGrpcReceiver(
                receiver_id, config.protocols.grpc, config.auth, intake, logger, telemetry, config.limits
            )
        )
    if config.protocols.http is not None:
        receivers.append(
            OtlpHttpReceiver(
                receiver_id, config.protocols.http, config.auth, intake, logger, telemetry, config.limits
            )
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
