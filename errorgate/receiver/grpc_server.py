"""OTLP/gRPC receiver: TraceService, LogsService and MetricsService ``Export`` plus gRPC health.

Handlers are generic and take raw bytes (no request deserializer) so that decoding
errors get a precise INVALID_ARGUMENT and the undecoded body reaches the intake for
duplicate detection. grpc itself handles gzip request compression.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from errorgate.config import ConfigError, TLSServerConfig
from errorgate.errors import Backpressure, InvalidRequest, LimitExceeded, ProcessingFailed
from errorgate.intake.contract import Intake
from errorgate.receiver.base import ReceiverBase
from errorgate.receiver.common import (
    BACKPRESSURE,
    INTERNAL,
    MALFORMED,
    MIB,
    PROCESSING_FAILED,
    TOO_LARGE,
    UNAUTHENTICATED,
    export_response,
    format_endpoint,
    size_limit_message,
)
from errorgate.receiver.config import AuthConfig, GrpcProtocolConfig, RequestLimitsConfig
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
_HEALTH_POLL_INTERVAL = 1.0
_GRPC_MAX_MESSAGE = 2**31 - 1


class OtlpGrpcReceiver(ReceiverBase):
    protocol = "grpc"

    def __init__(
        self,
        receiver_id: str,
        config: GrpcProtocolConfig,
        auth: AuthConfig | None,
        intake: Intake,
        logger: logging.Logger,
        telemetry: Telemetry,
        limits: RequestLimitsConfig | None = None,
    ) -> None:
        super().__init__(receiver_id, config.endpoint, auth, intake, logger, telemetry, limits)
        self._config = config
        self._limit = int(config.max_recv_msg_size_mib * MIB)
        self._server: grpc.Server | None = None
        self._health = _ReadinessHealth(intake, logger)
        self._stopping = threading.Event()
        self._bound_port = 0

    @property
    def endpoint(self) -> str:
        return format_endpoint(self._host, self._bound_port or self._port)

    def start(self) -> int:
        # grpc enforces a hard cap well above the configured limit so that most oversize
        # requests reach the handler, which refuses them with the configured limit in the
        # message and counts them; anything beyond the cap is refused by grpc itself.
        hard_cap = min(max(self._limit * 4, self._limit + 4 * MIB), _GRPC_MAX_MESSAGE)
        options = [
            ("grpc.max_receive_message_length", hard_cap),
            ("grpc.max_concurrent_streams", self._config.max_concurrent_streams),
            ("grpc.so_reuseport", 0),
            ("grpc.max_allowed_incoming_connections", self._config.max_connections),
            ("grpc.server_handshake_timeout_ms", _millis(self._config.handshake_timeout)),
            ("grpc.max_connection_idle_ms", _millis(self._config.max_connection_idle)),
        ]
        workers = handler_threads(self._config.max_concurrent_streams)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"grpc-{self.receiver_id}"),
            options=options,
        )
        handlers = {
            signal: grpc.unary_unary_rpc_method_handler(
                self._make_handler(signal),
                request_deserializer=None,
                response_serializer=lambda m: m.SerializeToString(),
            )
            for signal in Signal
        }
        for signal, handler in handlers.items():
            # Registered methods: grpc matches them in C instead of asking each generic handler.
            server.add_registered_method_handlers(SERVICES[signal], {"Export": handler})
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = format_endpoint(self._host, self._port)
        try:
            if self._config.tls is not None:
                port = server.add_secure_port(address, _server_credentials(self._config.tls, self._key_path))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise ConfigError(f"{self._key_path}.endpoint: cannot listen on {address}: {e}") from None
        if port == 0:
            raise ConfigError(f"{self._key_path}.endpoint: cannot listen on {address}")
        server.start()
        self._server = server
        self._bound_port = port
        self._health.start()
        self._logger.info("OTLP/gRPC receiver %s listening on %s", self.receiver_id, self.endpoint)
        self._warn_if_all_interfaces(self.endpoint)
        return port

    def stop(self, grace: float) -> None:
        self._stopping.set()
        self._health.stop()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1.0)
            self._server = None

    # ------------------------------------------------------------ request handling

    def _refuse(self, reason: str) -> None:
        self._telemetry.child(self._telemetry.rejected_batches, self.receiver_id, reason).inc()

    def _make_handler(self, signal: Signal) -> Any:
        def export(data: bytes, context: grpc.ServicerContext) -> Any:
            return self._export(signal, data, context)

        return export

    def _export(self, signal: Signal, data: bytes, context: grpc.ServicerContext) -> Any:
        if self._auth is not None and not self._auth.check(_metadata_value(context, "authorization")):
            self._refuse(UNAUTHENTICATED)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        if len(data) > self._limit:
            self._refuse(TOO_LARGE)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                size_limit_message(
                    "request",
                    len(data),
                    self._limit,
                    "max_recv_msg_size_mib",
                    self._config.max_recv_msg_size_mib,
                ),
            )
        if self._stopping.is_set():
            self._refuse(BACKPRESSURE)
            _abort_unavailable(context, "receiver is shutting down", 1.0)
        try:
            # Decoding is the intake's: a body it proves valid from the bytes is never decoded.
            self._limits.check_protobuf(signal, data)
        except LimitExceeded as e:
            self._refuse(TOO_LARGE)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except ValueError as e:
            self._refuse(MALFORMED)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception as e:
            # grpc would send the exception text, which may quote the payload; log only the type.
            self._refuse(INTERNAL)
            self._logger.error(
                "decoding %s on %s failed: %s", signal.value, self.receiver_id, type(e).__name__
            )
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        try:
            result = self._intake.accept(signal, None, raw=data, receiver=self.receiver_id)
        except Backpressure as e:
            self._refuse(BACKPRESSURE)
            _abort_unavailable(context, str(e) or "gateway is busy", e.retry_after)
        except LimitExceeded as e:
            self._refuse(TOO_LARGE)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except InvalidRequest as e:
            self._refuse(MALFORMED)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except ProcessingFailed as e:
            self._refuse(PROCESSING_FAILED)
            context.abort(grpc.StatusCode.INTERNAL, str(e) or "processing failed")
        except Exception as e:
            # The exception text may quote telemetry; log only its type.
            self._refuse(INTERNAL)
            self._logger.error("%s export on %s failed: %s", signal.value, self.receiver_id, type(e).__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        return export_response(signal, result)


def handler_threads(max_concurrent_streams: int) -> int:
    """Threads that run export handlers. The handlers' Python work is serialized by the GIL, so
    threads beyond a few per core only add GIL hand-offs and wake-ups: under bench load 64
    threads cost about a third more CPU per item than 4. Calls beyond this wait in the
    executor's queue (grpc still accepts them), so no client is refused for it."""
    return min(max(4, max_concurrent_streams), max(4, 2 * (os.cpu_count() or 1)))


def _millis(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _metadata_value(context: grpc.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return None


def _abort_unavailable(context: grpc.ServicerContext, message: str, retry_after: float) -> None:
    """UNAVAILABLE with a google.rpc.RetryInfo detail, which OTLP clients honour as the backoff."""
    delay = max(retry_after, 0.0)
    retry = error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=int(delay), nanos=int((delay - int(delay)) * 1e9))
    )
    status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)
    status.details.add().Pack(retry)
    # grpc-status-details-bin is what Go clients (the Collector) read; the Python SDK reads
    # the bare RetryInfo from google.rpc.retryinfo-bin.
    context.set_trailing_metadata(
        (
            ("grpc-status-details-bin", status.SerializeToString()),
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        )
    )
    context.abort(grpc.StatusCode.UNAVAILABLE, message)


def _server_credentials(tls: TLSServerConfig, key_path: str) -> grpc.ServerCredentials:
    def read(name: str, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"{key_path}.tls.{name}: cannot read {path}: {e.strerror}") from None

    key = read("key_file", tls.key_file)
    cert = read("cert_file", tls.cert_file)
    ca = read("client_ca_file", tls.client_ca_file) if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


class _ReadinessHealth(health.HealthServicer):  # type: ignore[misc]
    """gRPC health whose status follows ``Intake.readiness()`` ("fail" -> NOT_SERVING)."""

    SERVICE_NAMES = ("", *SERVICES.values())

    def __init__(self, intake: Intake, logger: logging.Logger) -> None:
        super().__init__()
        self._intake = intake
        self._logger = logger
        self._current: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    def refresh(self) -> None:
        try:
            state, _ = self._intake.readiness()
        except Exception as e:
            self._logger.warning("readiness check failed: %s", type(e).__name__)
            state = "fail"
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if state == "fail"
            else health_pb2.HealthCheckResponse.SERVING
        )
        if status != self._current:
            self._current = status
            for name in self.SERVICE_NAMES:
                self.set(name, status)

    def Check(self, request: Any, context: Any) -> Any:
        self.refresh()
        return super().Check(request, context)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="grpc-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_HEALTH_POLL_INTERVAL):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self.enter_graceful_shutdown()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
