"""``make bench`` measures each peer in about its run's duration: the Go Collector's
``tail_sampling`` peer runs to the end of its window and delivers every trace it keeps, and a
target that stops answering shows as failed requests within a bounded grace, not as a run
stretched by the 30 s call timeout."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from bench import loadgen
from bench.__main__ import run_target
from bench.procs import free_port, wait_port
from bench.servers import METHODS
from tests.support.otelcol import otelcol_binary

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The benchmark's own counting sink, as ``make bench`` starts it."""
    port, count_file = free_port(), tmp_path / "count"
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.servers", "sink", "--port", str(port), "--count-file", str(count_file)],
        cwd=ROOT,
    )
    try:
        wait_port(port)
        yield port, count_file
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def test_tail_sampling_peer_runs_in_its_window_and_delivers_what_it_keeps(
    bench_sink: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERRORGATE_OTELCOL", str(otelcol_binary()))
    port, count_file = bench_sink
    duration = 4.0
    t0 = time.monotonic()
    result = run_target("otelcol-tailsampling", port, count_file, duration, 8, 1)
    wall = time.monotonic() - t0
    # Before: the peer's log filled an unread pipe, its decision goroutine blocked on the write,
    # every call timed out after 30 s and the Collector needed a kill to stop (≈ 70 s for 5 s).
    assert result["failed_requests"] == 0
    assert result["elapsed_s"] < duration + 1, result
    assert wall < duration + 15, result
    # Every trace it kept reached the sink (before: one request per kept trace overflowed the
    # exporter's queue, which rejected some), within the drain that errorgate's sample gets.
    assert result["rejected_items"] == 0, result
    assert result["delivered_bytes"] > result["delivered_bytes_in_window"] > 0
    assert result["drain_s"] < 5, result


@pytest.fixture
def silent_target() -> Iterator[int]:
    """An OTLP/gRPC endpoint that accepts calls and never answers them."""
    release = threading.Event()

    def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(60)
        return b""

    handler = grpc.unary_unary_rpc_method_handler(
        hang, request_deserializer=lambda b: b, response_serializer=lambda b: b
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    for method in METHODS:
        service, name = method.lstrip("/").split("/")
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {name: handler})])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield port
    finally:
        release.set()
        server.stop(0)


def test_a_stalled_target_fails_its_calls_within_the_grace_not_the_call_timeout(silent_target: int) -> None:
    result = loadgen.run(f"127.0.0.1:{silent_target}", duration=1.0, concurrency=2, seed=1)
    assert result["acked_items"] == 0
    assert result["failed_requests"] == 2
    assert result["elapsed_s"] < 1.0 + loadgen.GRACE_S + 2, result
