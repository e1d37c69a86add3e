"""Slow and surplus connections: the HTTP receiver's header and body timeouts are deadlines (a
client trickling bytes cannot stretch them), connections over the cap are answered 503 by the
accepting thread without a thread of their own, and the gRPC receiver's connection settings
(cap, handshake timeout, idle GOAWAY) reach grpc."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from errorgate.receiver import GrpcProtocolConfig, HttpProtocolConfig
from errorgate.receiver.grpc_server import OtlpGrpcReceiver
from errorgate.receiver.http_server import OtlpHttpReceiver
from errorgate.telemetry import Telemetry
from tests.support.receiver_kit import RecordingIntake, sdk_spans

LOG = logging.getLogger("test.receiver.slow")
KEY = "receivers.otlp.protocols.http"
PB = {"Content-Type": "application/x-protobuf"}
HEADERS_ONLY = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Content-Length: 5000\r\n\r\n"
)


class Http:
    def __init__(self, config: HttpProtocolConfig) -> None:
        self.intake, self.telemetry = RecordingIntake(), Telemetry()
        self.receiver = OtlpHttpReceiver("otlp", config, None, self.intake, LOG, self.telemetry)
        self.port = self.receiver.start()

    def connect(self, first: bytes = b"") -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if first:
            sock.sendall(first)
        return sock

    def normal_request(self) -> int:
        body = encode_spans(sdk_spans()).SerializeToString()
        url = f"http://127.0.0.1:{self.port}/v1/traces"
        return requests.post(url, data=body, headers=PB, timeout=10).status_code

    def refused(self, reason: str) -> float:
        value = self.telemetry.registry.get_sample_value(
            "errorgate_rejected_requests_total", {"receiver": "otlp", "reason": reason}
        )
        return value or 0.0


@pytest.fixture
def http() -> Iterator[Http]:
    server = Http(
        HttpProtocolConfig(
            endpoint="127.0.0.1:0", read_header_timeout=0.6, read_timeout=0.6, max_connections=12
        )
    )
    yield server
    server.receiver.stop(1.0)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (``sock`` times out at 10 s)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_for_threads(count: int, timeout: float = 5.0) -> int:
    """The thread count once it is down to ``count`` (or what it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def _wait_for_more_threads(count: int, timeout: float = 5.0) -> int:
    """The thread count once it is up to ``count`` (or what it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while threading.active_count() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return threading.active_count()


def test_stalled_bodies_get_408_at_the_read_timeout_and_free_their_threads(http: Http) -> None:
    baseline = threading.active_count()
    assert http.normal_request() == 200
    assert _wait_for_threads(baseline) == baseline  # its connection's thread has ended
    slow = [http.connect(HEADERS_ONLY + b"abc") for _ in range(8)]  # headers, then 3 of 5000 bytes
    assert _wait_for_more_threads(baseline + 8) == baseline + 8  # one thread per open connection
    assert http.normal_request() == 200  # meanwhile others are served
    started = time.monotonic()
    answers = [_read_all(sock) for sock in slow]
    assert time.monotonic() - started < 2.0  # closed by the 0.6 s timeout, not the client
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert f"request body not received within 0.6s ({KEY}.read_timeout)".encode() in answer
    for sock in slow:
        sock.close()
    assert _wait_for_threads(baseline) <= baseline
    assert http.refused("timeout") == 8
    assert len(http.intake.accepted) == 2


def test_stalled_and_trickled_headers_are_closed_at_the_header_timeout(http: Http) -> None:
    baseline = threading.active_count()
    stalled = http.connect(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    silent = http.connect()  # connects and never sends anything
    trickled = http.connect()
    started = time.monotonic()
    closed_at = None
    # A byte every 0.1 s: each read arrives well within any per-read timeout, yet the headers
    # as a whole never finish; the deadline closes the connection anyway.
    for byte in HEADERS_ONLY:
        try:
            trickled.sendall(bytes([byte]))
        except OSError:
            closed_at = time.monotonic() - started
            break
        time.sleep(0.1)
        if time.monotonic() - started > 3:
            break
    assert closed_at is not None and closed_at < 2.0
    assert _read_all(stalled) == b"" and _read_all(silent) == b""  # closed without an answer
    for sock in (stalled, silent, trickled):
        sock.close()
    assert _wait_for_threads(baseline) <= baseline
    assert http.refused("timeout") == 3
    assert http.normal_request() == 200


def test_body_timeout_is_a_deadline_for_trickled_bodies_too(http: Http) -> None:
    sock = http.connect(HEADERS_ONLY)
    started = time.monotonic()
    try:
        for _ in range(40):
            sock.sendall(b"x")  # one byte every 0.1 s: would last 4 s
            time.sleep(0.1)
    except OSError:
        pass
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 2.5
    sock.close()


def test_connections_over_the_cap_get_503_without_a_thread() -> None:
    http = Http(HttpProtocolConfig(endpoint="127.0.0.1:0", read_header_timeout=2.0, max_connections=12))
    baseline = threading.active_count()
    held = [http.connect(b"POST /v1/traces HTTP/1.1\r\n") for _ in range(12)]
    assert _wait_for_more_threads(baseline + 12) == baseline + 12
    extra = [http.connect() for _ in range(5)]
    for sock in extra:
        answer = _read_all(sock)  # answered at once, then closed
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in answer
        assert f"too many connections ({KEY}.max_connections=12)".encode() in answer
    assert threading.active_count() == baseline + 12  # the 503s held no thread
    assert http.refused("too_many_connections") == 5
    for sock in held:  # the held ones time out; then there is room again
        assert _read_all(sock) == b""
        sock.close()
    assert _wait_for_threads(baseline) <= baseline
    assert http.normal_request() == 200
    http.receiver.stop(1.0)


def test_keep_alive_connections_still_wait_idle_between_requests(http: Http) -> None:
    """Idle time between keep-alive requests is not the header timeout: a client that reuses
    its connection after a pause longer than that is served."""
    body = encode_spans(sdk_spans()).SerializeToString()
    with requests.Session() as session:
        url = f"http://127.0.0.1:{http.port}/v1/traces"
        assert session.post(url, data=body, headers=PB, timeout=10).status_code == 200
        time.sleep(1.0)  # past read_header_timeout (0.6 s), well within the idle timeout
        assert session.post(url, data=body, headers=PB, timeout=10).status_code == 200
    assert http.refused("timeout") == 0


# ---------------------------------------------------------------- gRPC


@pytest.fixture
def grpc_receiver() -> Iterator[int]:
    config = GrpcProtocolConfig(
        endpoint="127.0.0.1:0", max_connections=3, handshake_timeout=0.5, max_connection_idle=0.5
    )
    receiver = OtlpGrpcReceiver("otlp", config, None, RecordingIntake(), LOG, Telemetry())
    yield receiver.start()
    receiver.stop(1.0)


def test_grpc_closes_connections_over_the_cap_and_unfinished_handshakes(grpc_receiver: int) -> None:
    socks = [socket.create_connection(("127.0.0.1", grpc_receiver), timeout=5) for _ in range(5)]
    started = time.monotonic()
    first = [sock.recv(1024) for sock in socks]
    assert all(first[:3])  # admitted: grpc sends its HTTP/2 SETTINGS
    assert first[3:] == [b"", b""]  # over max_connections: closed at once
    for sock in socks[:3]:  # they never send the HTTP/2 preface: closed at handshake_timeout
        _read_all(sock)
    assert 0.3 < time.monotonic() - started < 3.0
    for sock in socks:
        sock.close()


def test_grpc_idle_connections_get_goaway_and_clients_reconnect(grpc_receiver: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_receiver}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        states: list[grpc.ChannelConnectivity] = []
        channel.subscribe(states.append)
        time.sleep(1.5)  # past max_connection_idle: the server sent GOAWAY
        assert grpc.ChannelConnectivity.IDLE in states
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
