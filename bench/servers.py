"""The benchmark's two peers, each run as its own process: a counting OTLP/gRPC sink and the
bare pass-through proxy that is the baseline (receive raw bytes, forward them, return the
backend's answer — what a minimal Python relay does, with no parsing, queue or processing)."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from concurrent import futures

import grpc

METHODS = [
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
]
OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)]


def _identity(b: bytes) -> bytes:
    return b


def _serve(handlers: dict[str, grpc.RpcMethodHandler], port: int, workers: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS)
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method, handler in handlers.items():
        service, name = method.lstrip("/").split("/")
        by_service.setdefault(service, {})[name] = handler
    for service, methods in by_service.items():
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, methods)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def run_sink(port: int, count_file: str) -> None:
    """Counts bytes and requests; writes 'requests bytes' to count_file every 0.2 s."""
    lock = threading.Lock()
    stats = [0, 0]

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            stats[0] += 1
            stats[1] += len(request)
        return b""

    handler = grpc.unary_unary_rpc_method_handler(
        export, request_deserializer=_identity, response_serializer=_identity
    )
    server = _serve({m: handler for m in METHODS}, port, 8)
    _run_until_term(server, lambda: _write(count_file, stats, lock))


def run_proxy(port: int, upstream: str) -> None:
    channel = grpc.insecure_channel(upstream, options=OPTIONS)
    calls = {
        m: channel.unary_unary(m, request_serializer=_identity, response_deserializer=_identity)
        for m in METHODS
    }

    def make(method: str) -> grpc.RpcMethodHandler:
        call = calls[method]

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return call(request, timeout=10)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "upstream failed")
                raise

        return grpc.unary_unary_rpc_method_handler(
            forward, request_deserializer=_identity, response_serializer=_identity
        )

    server = _serve({m: make(m) for m in METHODS}, port, 16)
    _run_until_term(server, lambda: None)


def _write(path: str, stats: list[int], lock: threading.Lock) -> None:
    with lock:
        line = f"{stats[0]} {stats[1]}\n"
    with open(path + ".tmp", "w") as f:
        f.write(line)
    import os

    os.replace(path + ".tmp", path)


def _run_until_term(server: grpc.Server, tick: object) -> None:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(0.2):
        tick()  # type: ignore[operator]
    tick()  # type: ignore[operator]
    server.stop(1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["sink", "proxy"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", default="")
    ap.add_argument("--count-file", default="")
    a = ap.parse_args()
    if a.role == "sink":
        run_sink(a.port, a.count_file)
    else:
        run_proxy(a.port, a.upstream)
    time.sleep(0)
