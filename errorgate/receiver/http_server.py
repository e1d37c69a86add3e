"""OTLP/HTTP receiver (https://opentelemetry.io/docs/specs/otlp/#otlphttp).

A stdlib ``ThreadingHTTPServer`` speaking HTTP/1.1 with keep-alive (OTLP SDKs reuse
connections). Bodies are protobuf or JSON, optionally gzip/deflate/zstd compressed;
both the wire size and the decompressed size are limited. Error bodies are
``google.rpc.Status`` in the request's encoding, as the spec asks.
"""

from __future__ import annotations

import io
import logging
import math
import select
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
from errorgate.otlp.json_format import message_to_json
from errorgate.receiver.base import ReceiverBase
from errorgate.receiver.common import (
    BACKPRESSURE,
    INTERNAL,
    MALFORMED,
    PROCESSING_FAILED,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_CONNECTIONS,
    UNAUTHENTICATED,
    UNSUPPORTED_MEDIA_TYPE,
    OtherEncoding,
    export_response,
    format_endpoint,
    server_ssl_context,
)
from errorgate.receiver.config import AuthConfig, HttpProtocolConfig, RequestLimitsConfig
from errorgate.receiver.http_body import BodyError, decompress, read_body
from errorgate.signals import ExportRequest, Signal
from errorgate.telemetry import Telemetry

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_IDLE_TIMEOUT = 120.0  # seconds a keep-alive connection may sit idle
_LINGER_SECONDS = 5.0
_LINGER_PAUSE = 0.5
_LINGER_BYTES = 256 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    receiver: OtlpHttpReceiver
    ssl_context: ssl.SSLContext | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs on the accepting thread: a connection over the cap is answered here without
        # blocking and never gets a thread of its own.
        if not self.receiver.admit():
            self.receiver.turn_away(request, plain=self.ssl_context is None)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.receiver.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.receiver.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshakes run here, on the connection's own thread, so one slow client
        # cannot stall the accept loop.
        if self.ssl_context is not None:
            try:
                request = _handshake(self.ssl_context, request, self.receiver.read_header_timeout)
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


def _handshake(context: ssl.SSLContext, sock: socket.socket, timeout: float) -> ssl.SSLSocket:
    """The server side of a TLS handshake, all of it within ``timeout`` (a socket timeout
    alone restarts with every byte, so a client trickling its handshake could hold on)."""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.0)
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            event = select.POLLIN
        except ssl.SSLWantWriteError:
            event = select.POLLOUT
        remaining = deadline - time.monotonic()
        poller = select.poll()  # not select(): descriptors may be numbered above 1024
        poller.register(tls, event)
        if remaining <= 0 or not poller.poll(remaining * 1000):
            tls.close()
            raise TimeoutError("TLS handshake not completed in time")
    tls.settimeout(_IDLE_TIMEOUT)
    return tls


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each bounded by what is left until ``deadline``: a socket timeout
    alone restarts with every byte received, so a client trickling its headers or body would
    hold the connection's thread for as long as it likes."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = time.monotonic() + _IDLE_TIMEOUT
        self.expired = False  # a read ran into the deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            raise TimeoutError("read deadline passed")
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.expired = True
            raise


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
        limits: RequestLimitsConfig | None = None,
    ) -> None:
        super().__init__(receiver_id, config.endpoint, auth, intake, logger, telemetry, limits)
        self._config = config
        self.limit_mib = config.max_request_body_size_mib
        self.read_header_timeout = config.read_header_timeout
        self.read_timeout = config.read_timeout
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
        self._open = 0  # connections admitted and not yet finished (each holds a thread)
        self._bound_port = 0
        self._turn_away = _overloaded_response(
            f"too many connections ({self._key_path}.max_connections={config.max_connections})"
        )

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
        self._warn_if_all_interfaces(self.endpoint)
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

    def admit(self) -> bool:
        """Count a new connection in, unless ``max_connections`` are open already."""
        with self._lock:
            if self._open >= self._config.max_connections:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open -= 1

    def turn_away(self, conn: socket.socket, plain: bool) -> None:
        """Answer a connection over the cap without waiting on it: a 503 if the socket takes
        it at once (plain HTTP; a TLS client would need a handshake first), then it is closed."""
        self.refuse(TOO_MANY_CONNECTIONS)
        if not plain:
            return
        try:
            conn.setblocking(False)
            conn.send(self._turn_away)
        except OSError:
            pass

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
            request: ExportRequest | None = None
            if media == PROTOBUF:
                # Decoding is the intake's: a body it proves valid from the bytes is never decoded.
                self._limits.check_protobuf(signal, body)
            else:
                request = self._limits.decode_json(signal, body)
        except LimitExceeded as e:
            self.refuse(TOO_LARGE)
            return 413, str(e), {}
        except ValueError as e:
            self.refuse(MALFORMED)
            return 400, str(e), {}
        except Exception as e:
            # A bug in decoding: its text may quote the payload; log only the type.
            self.refuse(INTERNAL)
            self._logger.error(
                "decoding %s on %s failed: %s", signal.value, self.receiver_id, type(e).__name__
            )
            return 500, "internal error", {}
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


def _overloaded_response(message: str) -> bytes:
    """The whole HTTP answer to a connection over the cap (JSON: its request is not read)."""
    body = message_to_json(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message)).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Content-Type: {JSON}\r\nContent-Length: {len(body)}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_HTTP_TO_RPC = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    408: code_pb2.DEADLINE_EXCEEDED,
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
    _reader: _DeadlineReader
    _buffered: io.BufferedReader
    _requests = 0  # requests begun on this connection
    _in_body = False  # the current request's headers are in

    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would be noise at OTLP rates; errors are counted in metrics

    def setup(self) -> None:
        super().setup()
        # Every read of the connection goes through the deadline (headers, body, lingering).
        self.rfile.close()  # the socket's own reader: it would keep the socket from closing
        self._reader = _DeadlineReader(self.connection)
        self._buffered = io.BufferedReader(self._reader)
        self.rfile = self._buffered

    def handle_one_request(self) -> None:
        self._consumed = False
        reader = self._reader
        receiver = self.server.receiver
        if self._requests:
            # Between keep-alive requests the client may take its time to start the next one.
            reader.deadline = time.monotonic() + _IDLE_TIMEOUT
            try:
                if not self._buffered.peek(1):
                    self.close_connection = True
                    return
            except OSError:  # idle too long, or reset
                self.close_connection = True
                return
        self._requests += 1
        self._in_body = False
        reader.deadline = time.monotonic() + receiver.read_header_timeout
        super().handle_one_request()  # a timed-out read closes the connection there
        if reader.expired and not self._in_body:
            receiver.refuse(TIMEOUT)  # headers not in time (a late body is answered in _post)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        # The headers are in: what follows (the body) has read_timeout.
        self._in_body = True
        self._reader.deadline = time.monotonic() + self.server.receiver.read_timeout
        return ok

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
        except TimeoutError:
            receiver.refuse(TIMEOUT)
            self._consumed = True  # what was read is lost: the connection closes after the answer
            message = f"request body not received within {receiver.read_timeout:g}s"
            return self._error(408, f"{message} ({receiver.key_path}.read_timeout)", reply_media, close=True)
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
            while remaining > 0 and time.monotonic() < deadline:
                # A client that pauses for half a second is not sending any more.
                self._reader.deadline = min(deadline, time.monotonic() + _LINGER_PAUSE)
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
        # Reads left the socket's timeout at what remained of their deadline.
        self.connection.settimeout(_IDLE_TIMEOUT)
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
