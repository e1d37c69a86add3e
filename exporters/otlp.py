"""``otlp`` exporter: one export attempt per call over OTLP/gRPC (default) or OTLP/HTTP protobuf.

Queueing, retries and the circuit breaker wrap it in ``errorgate.delivery.exporter``; this module only
says how one attempt went. Status mapping follows the OTLP specification:

* gRPC retryable: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS,
  and RESOURCE_EXHAUSTED only when the server sent RetryInfo; every other code is permanent.
* HTTP retryable: 429, 502, 503, 504; any other 4xx/5xx is permanent.
* Connection refused / reset / timeouts: retryable.
* ``partial_success.rejected_*`` on an accepted request: reported as ``rejected_items``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from errorgate.component import (
    ComponentContext,
    Exporter,
    ExporterCapabilities,
    ExportResult,
    Factory,
)
from errorgate.config import DeliveryConfig, TLSClientConfig
from errorgate.signals import Batch

if TYPE_CHECKING:
    from errorgate.exporters._otlp_grpc import GrpcSender
    from errorgate.exporters._otlp_http import HttpSender


class OtlpExporterConfig(DeliveryConfig):
    endpoint: str  # "host:port" for grpc; base URL (http://host:4318) for http/protobuf
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    tls: TLSClientConfig = Field(default_factory=TLSClientConfig)
    headers: dict[str, str] = Field(default_factory=dict)
    compression: Literal["gzip", "none"] = "gzip"
    # timeout, retry_on_failure, sending_queue, circuit_breaker: DeliveryConfig

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("endpoint must not be empty")
        return value.strip()

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or any(c.isspace() for c in key):
                raise ValueError(f"header name {key!r} is not valid")
        return value


class OtlpExporter(Exporter):
    # Only the serialized request goes out: the delivery loop need not parse queued records.
    capabilities = ExporterCapabilities(sends_serialized=True)

    def __init__(self, config: OtlpExporterConfig, context: ComponentContext) -> None:
        self.config = config
        if config.protocol == "grpc":
            from errorgate.exporters._otlp_grpc import GrpcSender

            self._sender: GrpcSender | HttpSender = GrpcSender(config)
        else:
            from errorgate.exporters._otlp_http import HttpSender

            self._sender = HttpSender(config)

    def export(self, batch: Batch, timeout: float) -> ExportResult:
        return self._sender.send(batch, timeout)

    def shutdown(self) -> None:
        self._sender.close()


def create_otlp_exporter(config: OtlpExporterConfig, context: ComponentContext) -> Exporter:
    return OtlpExporter(config, context)


factory: Factory[OtlpExporterConfig, Exporter] = Factory(
    "otlp", OtlpExporterConfig, create_otlp_exporter, OtlpExporter
)
