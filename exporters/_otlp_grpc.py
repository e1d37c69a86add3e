"""OTLP/gRPC sender: raw ``unary_unary`` calls carrying the already-serialized request."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from errorgate.component import ExportResult
from errorgate.exporters._otlp_common import GRPC_METHODS, RESPONSE_TYPES, serialized, success_from_response
from errorgate.signals import Batch

if TYPE_CHECKING:
    from errorgate.exporters.otlp import OtlpExporterConfig

RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class GrpcSender:
    def __init__(self, config: OtlpExporterConfig) -> None:
        target = config.endpoint
        for scheme in ("http://", "https://", "dns:///"):
            if target.startswith(scheme):
                target = target[len(scheme) :]
        options: list[tuple[str, Any]] = [
            # errorgate paces retries itself; gRPC's own reconnect backoff (up to 120 s) would make
            # recovery after an outage lag far behind the backend coming back.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.max_send_message_length", -1),
        ]
        tls = config.tls
        if tls.insecure:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file, "tls.ca_file"),
                private_key=_read(tls.key_file, "tls.key_file"),
                certificate_chain=_read(tls.cert_file, "tls.cert_file"),
            )
            if tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", tls.server_name_override))
            self._channel = grpc.secure_channel(target, creds, options=options)
        self._calls = {
            signal: self._channel.unary_unary(
                path, request_serializer=None, response_deserializer=RESPONSE_TYPES[signal].FromString
            )
            for signal, path in GRPC_METHODS.items()
        }
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = (
            grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        )

    def send(self, batch: Batch, timeout: float) -> ExportResult:
        try:
            response = self._calls[batch.signal](
                serialized(batch), timeout=timeout, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as e:
            return classify_error(e)
        return success_from_response(batch.signal, response)

    def close(self) -> None:
        self._channel.close()


def classify_error(error: grpc.RpcError) -> ExportResult:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    retry_after = retry_delay(error.trailing_metadata() if hasattr(error, "trailing_metadata") else None)
    reason = code.name if code is not None else "UNKNOWN"
    if code in RETRYABLE or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is not None):
        return ExportResult.retry(reason, retry_after)
    return ExportResult.permanent(reason)


def retry_delay(trailing: Any) -> float | None:
    """The RetryInfo delay from ``grpc-status-details-bin`` trailing metadata, if any."""
    for key, value in trailing or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def _read(path: str | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{key}: cannot read {path}: {e.strerror}") from None
