"""OTLP/HTTP receiver (https://opentelemetry.io/docs/specs/otlp/#otlphttp).

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (OTLP SDKs reuse
connections). Bodies are protobuf or JSON, optionally gzip/deflate/zstd compressed;
both the wire size and the decompressed size are limited. Error bodies are
``google.rpc.Status`` in the request's encoding, as the spec asks.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from errorgate.config import ConfigError
from errorgate.errors import Backpressure, InvalidRequest, LimitExceeded, ProcessingFailed
from errorgate.intake.contract import Intake
from errorgate.otlp.json_format import from_json, message_to_json
from errorgate.receiver.base import ReceiverBase
from errorgate.receiver.common import (
    BACKPRESSURE,
    INTERNAL,
    MALFORMED,
    PROCESSING_FAILED,
    TOO_LARGE,
    UNAUTHENTICATED,
    UNSUPPORTED_MEDIA_TYPE,
    OtherEncoding,
    decode,
    export_response,
    format_endpoint,
    server_ssl_context,
)
from errorgate.receiver.config import AuthConfig, HttpProtocolConfig
from errorgate.receiver.http_body import BodyError, decompress, read_body
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle
_HANDSHAKE_TIMEOUT = 10.0
_LINGER_SECONDS = 5.0
_LINGER_BYTES = 256 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    receiver: OtlpHttpReceiver
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshakes run here, on the connection's own thread, so one slow client
        # cannot stall the accept loop.
        if self.ssl_context is not None:
            try:
                request.settimeout(_HANDSHAKE_TIMEOUT)
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as e:
                self.receiver._logger.debug("TLS handshake failed: %s", type(e).__name__)
                return
        self.receiver._track(request, True)
        try:
            super().finish_request(request, client_address)
        finally:
            self.receiver._track(request, False)
            if self.ssl_context is not None:
                request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connection resets and timeouts are routine; never print tracebacks to stderr.
        self.receiver._logger.debug("HTTP connection error from a client")


class _Server6(_Server):
    address_family = socket.AF_INET6


class OtlpHttpReceiver(ReceiverBase):
    protocol = "http"

    def __init__(
        self,
        receiver_id: str,
        config: HttpProtocolConfig,
        auth: AuthConfig | None,
        intake: Intake,
        logger: logging.Logger,
        telemetry: Telemetry,
    ) -> None:
        super().__init__(receiver_id, config.endpoint, auth, intake, logger, telemetry)
        self._config = config
        self.limit_mib = config.max_request_body_size_mib
        self.paths = {
            config.traces_url_path: Signal.TRACES,
            config.logs_url_path: Signal.LOGS,
            config.metrics_url_path: Signal.METRICS,
        }
        self._ssl = server_ssl_context(config.tls, self._key_path) if config.tls else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self._lock = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._in_flight = 0
        self._bound_port = 0

    @property
    def endpoint(self) -> str:
        return format_endpoint(self._host, self._bound_port or self._port)

    def start(self) -> int:
        cls = _Server6 if ":" in self._host else _Server
        try:
            server = cls((self._host, self._port), _Handler)
        except OSError as e:
            raise ConfigError(
                f"{self._key_path}.endpoint: cannot listen on {self._config.endpoint}: {e.strerror}"
            ) from None
        server.receiver = self
        server.ssl_context = self._ssl
        self._server = server
        self._bound_port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"http-{self.receiver_id}",
            daemon=True,
        )
        self._thread.start()
        self._logger.info("OTLP/HTTP receiver %s listening on %s", self.receiver_id, self.endpoint)
        return self._bound_port

    def stop(self, grace: float) -> None:
        self.stopping.set()
        if self._server is None:
            return
        self._server.shutdown()  # no new connections
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=grace)
            connections = list(self._connections)
        # Idle keep-alive connections would otherwise hold their threads until the client leaves.
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._server = None

    # ------------------------------------------------------------ bookkeeping

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._lock.notify_all()

    def refuse(self, reason: str) -> None:
        self._telemetry.rejected_batches.labels(self.receiver_id, reason).inc()

    def authenticate(self, header: str | None) -> bool:
        return self._auth is None or self._auth.check(header)

    def accept(self, signal: Signal, body: bytes, media: str) -> tuple[int, Message | str, dict[str, str]]:
        """Decode and hand to the intake: (HTTP status, response message or error text, extra headers)."""
        try:
            request = decode(signal, body) if media == PROTOBUF else from_json(signal, body)
        except LimitExceeded as e:
            self.refuse(TOO_LARGE)
            return 413, str(e), {}
        except ValueError as e:
            self.refuse(MALFORMED)
            return 400, str(e), {}
        try:
            raw = body if media == PROTOBUF else OtherEncoding(body)
            result = self._intake.accept(signal, request, raw=raw, receiver=self.receiver_id)
        except Backpressure as e:
            self.refuse(BACKPRESSURE)
            return 503, str(e) or "gateway is busy", {"Retry-After": str(max(1, math.ceil(e.retry_after)))}
        except LimitExceeded as e:
            self.refuse(TOO_LARGE)
            return 413, str(e), {}
        except InvalidRequest as e:
            self.refuse(MALFORMED)
            return 400, str(e), {}
        except ProcessingFailed as e:
            self.refuse(PROCESSING_FAILED)
            return 500, str(e) or "processing failed", {}
        except Exception as e:
            self.refuse(INTERNAL)
            self._logger.error("%s export on %s failed: %s", signal.value, self.receiver_id, type(e).__name__)
            return 500, "internal error", {}
        return 200, export_response(signal, result), {}


_HTTP_TO_RPC = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "errorgate"
    sys_version = ""
    timeout = _IDLE_TIMEOUT
    server: _Server
    _consumed = False

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would be noise at OTLP rates; errors are counted in metrics

    def do_POST(self) -> None:
        receiver = self.server.receiver
        receiver.begin()
        try:
            self._post(receiver)
        finally:
            receiver.end()

    def _post(self, receiver: OtlpHttpReceiver) -> None:
        path = self.path.split("?", 1)[0]
        signal = receiver.paths.get(path)
        media = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        reply_media = media if media in (PROTOBUF, JSON) else JSON
        if signal is None:
            return self._error(
                404, f"no OTLP endpoint at this path (use {', '.join(receiver.paths)})", reply_media
            )
        if receiver.stopping.is_set():
            receiver.refuse(BACKPRESSURE)
            return self._error(
                503, "receiver is shutting down", reply_media, {"Retry-After": "1"}, close=True
            )
        if not receiver.authenticate(self.headers.get("Authorization")):
            receiver.refuse(UNAUTHENTICATED)
            return self._error(
                401, "missing or invalid bearer token", reply_media, {"WWW-Authenticate": "Bearer"}
            )
        if media not in (PROTOBUF, JSON):
            receiver.refuse(UNSUPPORTED_MEDIA_TYPE)
            return self._error(
                415,
                f"unsupported Content-Type; use {PROTOBUF} or {JSON}",
                JSON,
                {"Accept-Post": f"{PROTOBUF}, {JSON}"},
            )
        try:
            wire = read_body(self.rfile, self.headers, receiver.limit_mib)
            self._consumed = True
            body = decompress(wire, self.headers.get("Content-Encoding"), receiver.limit_mib)
        except BodyError as e:
            if e.status == 413:
                receiver.refuse(TOO_LARGE)
            elif e.status == 415:
                receiver.refuse(UNSUPPORTED_MEDIA_TYPE)
            else:
                receiver.refuse(MALFORMED)
            return self._error(e.status, str(e), reply_media, close=e.close)
        status, response, headers = receiver.accept(signal, body, media)
        if isinstance(response, str):
            return self._error(status, response, media, headers)
        payload = response.SerializeToString() if media == PROTOBUF else message_to_json(response).encode()
        self._send(200, media, payload)

    def do_GET(self) -> None:
        self._not_allowed()

    def do_PUT(self) -> None:
        self._not_allowed()

    def do_DELETE(self) -> None:
        self._not_allowed()

    def do_PATCH(self) -> None:
        self._not_allowed()

    def do_HEAD(self) -> None:
        self._not_allowed()

    def _not_allowed(self) -> None:
        self._error(405, "only POST is supported", JSON, {"Allow": "POST"})

    def _error(
        self, code: int, message: str, media: str, headers: dict[str, str] | None = None, close: bool = False
    ) -> None:
        status = status_pb2.Status(code=_HTTP_TO_RPC.get(code, code_pb2.UNKNOWN), message=message)
        retry_after = (headers or {}).get("Retry-After")
        if retry_after:
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay={"seconds": int(retry_after)}))
        payload = status.SerializeToString() if media == PROTOBUF else message_to_json(status).encode()
        # A body we did not read would be parsed as the next request: drop the connection.
        consumed = self._body_consumed()
        if close or not consumed:
            self.close_connection = True
        self._send(code, media, payload, headers, close=self.close_connection)
        if not consumed:
            self._linger()

    def _linger(self) -> None:
        """Read and discard what the client is still sending before the connection closes.

        Most clients (requests, Go's net/http) write the whole body before reading the
        answer; closing on them mid-upload turns a clear 413 into a connection reset.
        """
        deadline = time.monotonic() + _LINGER_SECONDS
        remaining = _LINGER_BYTES
        try:
            self.connection.settimeout(0.5)
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(remaining, 256 * 1024))  # type: ignore[attr-defined]
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _body_consumed(self) -> bool:
        if self._consumed:
            return True
        length = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if chunked:
            return False
        if not length:
            return True
        try:
            n = int(length)
        except ValueError:
            return False
        # Small unread bodies are cheaper to drain than to reconnect for.
        if 0 <= n <= 64 * 1024:
            self.rfile.read(n)
            self._consumed = True
            return True
        return False

    def _send(
        self,
        code: int,
        media: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def handle_one_request(self) -> None:
        self._consumed = False
        super().handle_one_request()
