"""A test-side OTLP backend: real gRPC and HTTP servers on free loopback ports that record
every export request they receive.

Usage::

    with OtlpSink() as sink:                      # starts gRPC (+ HTTP) on 127.0.0.1, free ports
        exporter_endpoint = sink.grpc_endpoint    # "127.0.0.1:PORT"   (http: sink.http_url)
        ...
        sink.wait_for(100, timeout=10)            # until 100 items (spans+logs+points) arrived
        assert [s.name for s in sink.spans()] == [...]

Failure injection (applies to the next calls on either protocol, in arrival order)::

    sink.fail_next(3, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503,
                   retry_after=0.2)               # RetryInfo (gRPC) / Retry-After (HTTP)
    sink.reject_next(1, rejected=5, message="bad")  # answer OK with partial_success

TLS: ``OtlpSink(tls_cert=..., tls_key=..., client_ca=...)`` (see ``tests.support.certs``).

Outage simulation: ``sink.stop()`` closes both servers and cuts open HTTP keep-alive
connections (clients get connection refused/reset), ``sink.start()`` brings them back on the
same ports.

Only *successful* calls are recorded in ``requests``; every call (failed ones too) is counted
in ``calls`` — e.g. ``sink.calls["grpc"]``.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.otlp.json_format import from_json
from errorgate.signals import ExportRequest, Signal, count_items

_SERVICES = {
    Signal.TRACES: (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
        "/v1/traces",
    ),
    Signal.LOGS: (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
        "/v1/logs",
    ),
    Signal.METRICS: (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        "/v1/metrics",
    ),
}


@dataclass
class _Failure:
    grpc_code: grpc.StatusCode
    http_status: int
    retry_after: float | None
    message: str


@dataclass
class _Rejection:
    rejected: int
    message: str


@dataclass(frozen=True)
class Received:
    signal: Signal
    request: ExportRequest
    protocol: str  # "grpc" or "http"
    headers: dict[str, str]


class OtlpSink:
    def __init__(
        self,
        *,
        grpc_enabled: bool = True,
        http_enabled: bool = True,
        host: str = "127.0.0.1",
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        client_ca: Path | None = None,
    ) -> None:
        """``tls_cert``/``tls_key`` serve TLS on both protocols; ``client_ca`` also requires
        client certificates signed by it (mTLS)."""
        self.host = host
        self._tls = (tls_cert, tls_key, client_ca) if tls_cert and tls_key else None
        self.grpc_port = 0
        self.http_port = 0
        self._grpc_enabled = grpc_enabled
        self._http_enabled = http_enabled
        self._lock = threading.Condition()
        self._plan: list[_Failure | _Rejection] = []
        self.requests: list[Received] = []
        self.calls: Counter[str] = Counter()
        self.failed_calls: Counter[str] = Counter()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> OtlpSink:
        """Start (or restart after ``stop``) on the same ports."""
        if self._grpc_enabled and self._grpc is None:
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)]
            )
            for signal, (service, req_type, _resp, _path) in _SERVICES.items():
                handler = grpc.unary_unary_rpc_method_handler(
                    self._grpc_handler(signal),
                    request_deserializer=req_type.FromString,
                    response_serializer=lambda m: m.SerializeToString(),
                )
                server.add_generic_rpc_handlers(
                    (grpc.method_handlers_generic_handler(service, {"Export": handler}),)
                )
            port = self._bind_grpc(server, self._grpc_credentials())
            server.start()
            self.grpc_port, self._grpc = port, server
        if self._http_enabled and self._http is None:
            httpd = self._bind_http()
            self.http_port = httpd.server_address[1]
            thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._http, self._http_thread = httpd, thread
        return self

    def _grpc_credentials(self) -> grpc.ServerCredentials | None:
        if self._tls is None:
            return None
        cert, key, client_ca = self._tls
        return grpc.ssl_server_credentials(
            [(Path(key).read_bytes(), Path(cert).read_bytes())],  # type: ignore[arg-type]
            root_certificates=Path(client_ca).read_bytes() if client_ca else None,
            require_client_auth=client_ca is not None,
        )

    def _bind_grpc(self, server: grpc.Server, credentials: grpc.ServerCredentials | None) -> int:
        # The port may linger for a moment after stop(); retry briefly rather than fail the test.
        deadline = time.monotonic() + 5
        while True:
            address = f"{self.host}:{self.grpc_port}"
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
            if port:
                return int(port)
            if time.monotonic() > deadline:
                raise RuntimeError(f"OtlpSink: cannot bind gRPC port {self.grpc_port}")
            time.sleep(0.05)

    def _bind_http(self) -> ThreadingHTTPServer:
        sink = self

        class Handler(_HttpHandler):
            owner = sink

        ThreadingHTTPServer.allow_reuse_address = True
        deadline = time.monotonic() + 5
        while True:
            try:
                httpd = ThreadingHTTPServer((self.host, self.http_port), Handler)
                httpd.daemon_threads = True
                if self._tls is not None:
                    cert, key, client_ca = self._tls
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ctx.load_cert_chain(str(cert), str(key))
                    if client_ca:
                        ctx.load_verify_locations(str(client_ca))
                        ctx.verify_mode = ssl.CERT_REQUIRED
                    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
                return httpd
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Close both servers: clients get connection refused until ``start``."""
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
            # Keep-alive connections would otherwise go on being served: a real outage cuts them.
            with self._lock:
                open_connections, self._connections = self._connections, set()
            for conn in open_connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def running(self) -> bool:
        return self._grpc is not None or self._http is not None

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    # ---------------------------------------------------------------- failure injection

    def fail_next(
        self,
        n: int,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        http_status: int = 503,
        retry_after: float | None = None,
        message: str = "injected failure",
    ) -> None:
        with self._lock:
            self._plan.extend(_Failure(grpc_code, http_status, retry_after, message) for _ in range(n))

    def reject_next(self, n: int = 1, rejected: int = 1, message: str = "rejected by sink") -> None:
        """Accept the next ``n`` calls but answer with partial_success (``rejected`` items)."""
        with self._lock:
            self._plan.extend(_Rejection(rejected, message) for _ in range(n))

    def clear_failures(self) -> None:
        with self._lock:
            self._plan.clear()

    def _next_plan(self, protocol: str) -> _Failure | _Rejection | None:
        with self._lock:
            self.calls[protocol] += 1
            step = self._plan.pop(0) if self._plan else None
            if isinstance(step, _Failure):
                self.failed_calls[protocol] += 1
            return step

    def _record(self, signal: Signal, request: ExportRequest, protocol: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(Received(signal, request, protocol, headers))
            self._lock.notify_all()

    # ---------------------------------------------------------------- gRPC

    def _grpc_handler(self, signal: Signal) -> Any:
        resp_type = _SERVICES[signal][2]

        def handle(request: ExportRequest, context: grpc.ServicerContext) -> Any:
            step = self._next_plan("grpc")
            if isinstance(step, _Failure):
                if step.retry_after is not None:
                    context.set_trailing_metadata(
                        (
                            (
                                "grpc-status-details-bin",
                                _status_details(step.grpc_code, step.message, step.retry_after),
                            ),
                        )
                    )
                context.abort(step.grpc_code, step.message)
            headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            self._record(signal, request, "grpc", headers)
            response = resp_type()
            if isinstance(step, _Rejection):
                _set_partial(response, signal, step)
            return response

        return handle

    # ---------------------------------------------------------------- queries

    def _requests(self, signal: Signal) -> list[ExportRequest]:
        with self._lock:
            return [r.request for r in self.requests if r.signal is signal]

    def spans(self) -> list[Span]:
        return [
            s
            for req in self._requests(Signal.TRACES)
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]  # type: ignore[union-attr]

    def log_records(self) -> list[LogRecord]:
        return [
            r
            for req in self._requests(Signal.LOGS)
            for rl in req.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]  # type: ignore[union-attr]

    def metric_points(self) -> list[tuple[Metric, Any]]:
        """(metric, data point) for every data point received."""
        out = []
        for req in self._requests(Signal.METRICS):
            for rm in req.resource_metrics:  # type: ignore[union-attr]
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind:
                            out.extend((m, p) for p in getattr(m, kind).data_points)
        return out

    def item_count(self, signal: Signal | None = None) -> int:
        with self._lock:
            return sum(count_items(r.request) for r in self.requests if signal is None or r.signal is signal)

    def wait_for(self, n_items: int, timeout: float = 10.0, signal: Signal | None = None) -> bool:
        """Block until at least ``n_items`` items (of ``signal``, or all) were received."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.item_count(signal) < n_items:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
            return True

    def __iter__(self) -> Iterator[Received]:
        with self._lock:
            return iter(list(self.requests))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self.failed_calls.clear()
            self._plan.clear()


def _status_details(code: grpc.StatusCode, message: str, retry_after: float) -> bytes:
    info = error_details_pb2.RetryInfo(
        retry_delay=Duration(seconds=int(retry_after), nanos=round((retry_after % 1) * 1e9))
    )
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    return status.SerializeToString()


def _set_partial(response: Any, signal: Signal, step: _Rejection) -> None:
    field = {
        Signal.TRACES: "rejected_spans",
        Signal.LOGS: "rejected_log_records",
        Signal.METRICS: "rejected_data_points",
    }
    setattr(response.partial_success, field[signal], step.rejected)
    response.partial_success.error_message = step.message


class _HttpHandler(BaseHTTPRequestHandler):
    owner: OtlpSink
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        signal = next((s for s, (_svc, _req, _resp, path) in _SERVICES.items() if self.path == path), None)
        if signal is None:
            self._reply(404, b"unknown path", "text/plain")
            return
        step = self.owner._next_plan("http")
        if isinstance(step, _Failure):
            extra = {"Retry-After": f"{step.retry_after:g}"} if step.retry_after is not None else {}
            self._reply(step.http_status, step.message.encode(), "text/plain", extra)
            return
        if self.headers.get("Content-Encoding", "") == "gzip":
            body = gzip.decompress(body)
        request = _SERVICES[signal][1]()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            request = from_json(signal, body)
        else:
            request.ParseFromString(body)
        self.owner._record(signal, request, "http", {k.lower(): v for k, v in self.headers.items()})
        response = _SERVICES[signal][2]()
        if isinstance(step, _Rejection):
            _set_partial(response, signal, step)
        self._reply(200, response.SerializeToString(), "application/x-protobuf")

    def _reply(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


# ---------------------------------------------------------------- request builders


def trace_request(n_spans: int, service: str = "checkout", name: str = "op", start: int = 0) -> ExportRequest:
    """``n_spans`` spans named ``f"{name}-{start + i}"`` (distinct trace/span ids) from one service."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    for i in range(start, start + n_spans):
        span = ss.spans.add()
        span.name = f"{name}-{i}"
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
        span.end_time_unix_nano = 1_700_000_000_000_000_000 + i + 1000
    return req


def log_request(
    n_records: int, service: str = "checkout", body: str = "line", start: int = 0
) -> ExportRequest:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    sl = rl.scope_logs.add()
    for i in range(start, start + n_records):
        record = sl.log_records.add()
        record.body.string_value = f"{body}-{i}"
        record.time_unix_nano = 1_700_000_000_000_000_000 + i
    return req


def metric_request(
    n_points: int, service: str = "checkout", name: str = "requests", start: int = 0
) -> ExportRequest:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = name
    for i in range(start, start + n_points):
        point = metric.gauge.data_points.add()
        point.as_int = i
        point.time_unix_nano = 1_700_000_000_000_000_000 + i
    return req
