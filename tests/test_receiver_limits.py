"""Hostile request shapes: small requests that would decode to millions of objects, and nesting
deep enough to break recursion. Both receivers refuse them before decoding (RESOURCE_EXHAUSTED /
413, or INVALID_ARGUMENT / 400 for nesting), naming the config key, and nothing reaches the
intake. The counting itself is checked against decoding on ordinary and odd encodings."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from errorgate.errors import LimitExceeded
from errorgate.otlp.counts import Caps, Over, WireError, over_cap, over_cap_json
from errorgate.otlp.json_format import to_json
from errorgate.receiver import GrpcProtocolConfig, HttpProtocolConfig, RequestLimitsConfig
from errorgate.receiver.grpc_server import OtlpGrpcReceiver
from errorgate.receiver.http_server import OtlpHttpReceiver
from errorgate.receiver.limits import RequestLimits
from errorgate.signals import Signal, count_items
from errorgate.telemetry import Telemetry
from tests.support.receiver_kit import RecordingIntake, sdk_logs, sdk_metrics, sdk_spans

LOG = logging.getLogger("test.receiver.limits")
PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}
METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
}
PATHS = {Signal.TRACES: "/v1/traces", Signal.LOGS: "/v1/logs", Signal.METRICS: "/v1/metrics"}
KEY = "receivers.otlp.limits"


# ---------------------------------------------------------------- hostile bodies, built by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def empty_items(n: int) -> bytes:
    """One resource entry, one scope entry, ``n`` empty items (spans, log records or metrics)."""
    return _field(1, _field(2, b"\x12\x00" * n))


def empty_resources(n: int) -> bytes:
    return b"\x0a\x00" * n


def empty_scopes(n: int) -> bytes:
    return _field(1, b"\x12\x00" * n)


def empty_points(n: int) -> bytes:
    """One gauge metric with ``n`` empty data points."""
    gauge = _field(5, b"\x0a\x00" * n)
    return _field(1, _field(2, _field(2, gauge)))


def nested_any_value(depth: int) -> bytes:
    """An AnyValue holding arrays ``depth`` deep, built without recursion."""
    value = AnyValue(string_value="leaf").SerializeToString()
    for _ in range(depth):
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    return value


def deep_log_request(depth: int) -> bytes:
    record = _field(5, nested_any_value(depth))  # LogRecord.body
    return _field(1, _field(2, _field(2, record)))


def deep_json_log(depth: int) -> bytes:
    """A log record whose body nests arrays ``depth`` deep (3 JSON levels each)."""
    body = '{"arrayValue":{"values":[' * depth + '{"stringValue":"leaf"}' + "]}}" * depth
    return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + body + "}]}]}]}").encode()


# ---------------------------------------------------------------- the receivers


class Receivers:
    def __init__(self, limits: RequestLimitsConfig) -> None:
        self.intake, self.telemetry = RecordingIntake(), Telemetry()
        self.grpc = OtlpGrpcReceiver(
            "otlp", GrpcProtocolConfig(endpoint="127.0.0.1:0"), None, self.intake, LOG, self.telemetry, limits
        )
        self.http = OtlpHttpReceiver(
            "otlp", HttpProtocolConfig(endpoint="127.0.0.1:0"), None, self.intake, LOG, self.telemetry, limits
        )
        self.grpc_port = self.grpc.start()
        self.base = f"http://127.0.0.1:{self.http.start()}"

    def export(self, signal: Signal, body: bytes) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            call = channel.unary_unary(METHODS[signal], request_serializer=None, response_deserializer=None)
            call(body, timeout=30)

    def post(self, signal: Signal, body: bytes, headers: dict[str, str] = PB) -> requests.Response:
        return requests.post(self.base + PATHS[signal], data=body, headers=headers, timeout=30)

    def refused(self, reason: str) -> float:
        value = self.telemetry.registry.get_sample_value(
            "errorgate_rejected_requests_total", {"receiver": "otlp", "reason": reason}
        )
        return value or 0.0

    def stop(self) -> None:
        self.grpc.stop(1.0)
        self.http.stop(1.0)


@pytest.fixture
def rx() -> Iterator[Receivers]:
    receivers = Receivers(RequestLimitsConfig())  # the defaults
    yield receivers
    receivers.stop()


@pytest.fixture
def small() -> Iterator[Receivers]:
    receivers = Receivers(
        RequestLimitsConfig(max_items_per_request=50, max_resources_per_request=5, max_scopes_per_request=8)
    )
    yield receivers
    receivers.stop()


def _status(resp: requests.Response) -> status_pb2.Status:
    if resp.headers["Content-Type"] == "application/x-protobuf":
        return status_pb2.Status.FromString(resp.content)
    doc = resp.json()
    return status_pb2.Status(code=doc.get("code", 0), message=doc.get("message", ""))


def _refused_everywhere(rx: Receivers, signal: Signal, body: bytes, message: str) -> None:
    """Both receivers answer ``body`` RESOURCE_EXHAUSTED / 413 with ``message``, promptly."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        rx.export(signal, body)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert exc.value.details() == message
    resp = rx.post(signal, body)
    assert resp.status_code == 413
    status = _status(resp)
    assert (status.code, status.message) == (8, message)  # RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 5  # the unguarded decode took seconds and a GiB
    assert rx.intake.accepted == []
    assert rx.refused("too_large") == 2


# ---------------------------------------------------------------- small requests that cost gigabytes


def test_a_flood_of_empty_log_records_is_refused_before_decoding(rx: Receivers) -> None:
    # The issue's shape (1M records in 2 MB: 9 s, 1.3 GiB), scaled to 3x the default cap.
    body = empty_items(300_000)
    message = f"request holds more than 100000 log records ({KEY}.max_items_per_request=100000)"
    _refused_everywhere(rx, Signal.LOGS, body, message)


def test_a_flood_of_empty_resource_entries_is_refused_before_decoding(rx: Receivers) -> None:
    # The issue's shape (7M empty resource_spans in 14 MB: 1.5 GiB), scaled to 5x the default cap.
    body = empty_resources(100_000)
    message = f"request holds more than 20000 resource entries ({KEY}.max_resources_per_request=20000)"
    _refused_everywhere(rx, Signal.TRACES, body, message)


def test_a_flood_of_empty_scope_entries_is_refused(rx: Receivers) -> None:
    message = f"request holds more than 20000 scope entries ({KEY}.max_scopes_per_request=20000)"
    _refused_everywhere(rx, Signal.METRICS, empty_scopes(100_000), message)


def test_a_flood_of_empty_data_points_is_refused(rx: Receivers) -> None:
    message = (
        "request holds more than 100000 data points (a metric without any counts as one) "
        f"({KEY}.max_items_per_request=100000)"
    )
    _refused_everywhere(rx, Signal.METRICS, empty_points(300_000), message)


def test_the_issue_sized_floods_cost_milliseconds() -> None:
    """Full size, straight at the receivers' decoding step: 1M empty log records (2 MB) and 7M
    empty resource entries (14 MB). The count stops at the cap instead of walking them all."""
    limits = RequestLimits(RequestLimitsConfig(), KEY)
    for signal, body in ((Signal.LOGS, empty_items(1_000_000)), (Signal.TRACES, empty_resources(7_000_000))):
        started = time.monotonic()
        with pytest.raises(LimitExceeded):
            limits.decode_protobuf(signal, body)
        assert time.monotonic() - started < 1.0


def test_requests_at_the_caps_pass_and_one_more_is_refused(small: Receivers) -> None:
    at_cap = {
        Signal.LOGS: empty_items(50),
        Signal.TRACES: empty_resources(5),
        Signal.METRICS: empty_scopes(8),
    }
    for signal, body in at_cap.items():
        small.export(signal, body)
        assert small.post(signal, body).status_code == 200
    assert len(small.intake.accepted) == 6
    over = {
        Signal.LOGS: (empty_items(51), "log records", "max_items_per_request=50"),
        Signal.TRACES: (empty_resources(6), "resource entries", "max_resources_per_request=5"),
        Signal.METRICS: (empty_scopes(9), "scope entries", "max_scopes_per_request=8"),
    }
    for signal, (body, noun, key) in over.items():
        with pytest.raises(grpc.RpcError) as exc:
            small.export(signal, body)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert noun in exc.value.details() and f"{KEY}.{key}" in exc.value.details()
        resp = small.post(signal, body)
        assert resp.status_code == 413 and f"{KEY}.{key}" in _status(resp).message
    assert len(small.intake.accepted) == 6


def test_json_bodies_are_counted_before_conversion(small: Receivers) -> None:
    ok = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * 50}]}]}
    assert small.post(Signal.LOGS, json.dumps(ok).encode(), JS).status_code == 200
    # both spellings of a key are converted (and so counted) together
    too_many = {
        "resourceLogs": [{"scopeLogs": [{"logRecords": [{}] * 30, "log_records": [{}] * 21}]}],
    }
    resp = small.post(Signal.LOGS, json.dumps(too_many).encode(), JS)
    assert resp.status_code == 413
    assert (
        resp.json()["message"] == f"request holds more than 50 log records ({KEY}.max_items_per_request=50)"
    )
    resources = {"resourceSpans": [{}] * 6}
    resp = small.post(Signal.TRACES, json.dumps(resources).encode(), JS)
    assert resp.status_code == 413 and "max_resources_per_request=5" in resp.json()["message"]
    points = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"sum": {"dataPoints": [{}] * 51}}]}]}]}
    resp = small.post(Signal.METRICS, json.dumps(points).encode(), JS)
    assert resp.status_code == 413 and "data points" in resp.json()["message"]
    assert len(small.intake.accepted) == 1


def test_ordinary_sdk_requests_are_unchanged(small: Receivers) -> None:
    """Real SDK requests, in both encodings, under caps they fit."""
    requests_by_signal = {
        Signal.TRACES: encode_spans(sdk_spans()),
        Signal.LOGS: encode_logs(sdk_logs()),
        Signal.METRICS: encode_metrics(sdk_metrics()),
    }
    for signal, request in requests_by_signal.items():
        small.export(signal, request.SerializeToString())
        assert small.post(signal, to_json(request).encode(), JS).status_code == 200
    assert [a.request for a in small.intake.accepted] == [
        r for r in requests_by_signal.values() for _ in (1, 2)
    ]


# ---------------------------------------------------------------- nesting


def test_json_nested_past_the_depth_limit_is_a_400_naming_it(rx: Receivers) -> None:
    for depth in (300, 5000):  # deep enough for RecursionError before: no response at all
        resp = rx.post(Signal.LOGS, deep_json_log(depth), JS)
        assert resp.status_code == 400
        assert resp.json()["message"] == f"OTLP/JSON nested deeper than 64 levels ({KEY}.max_json_depth=64)"
    # Nesting that validation.max_attribute_depth (8) still judges item by item passes here.
    assert rx.post(Signal.LOGS, deep_json_log(12), JS).status_code == 200
    assert len(rx.intake.accepted) == 1
    assert rx.refused("malformed") == 2


def test_protobuf_nested_10000_deep_is_invalid_argument_not_a_crash(rx: Receivers) -> None:
    body = deep_log_request(10_000)
    with pytest.raises(grpc.RpcError) as exc:
        rx.export(Signal.LOGS, body)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.details().startswith("cannot decode ExportLogsServiceRequest: ")
    resp = rx.post(Signal.LOGS, body)
    assert resp.status_code == 400 and _status(resp).message.startswith("cannot decode")
    assert rx.intake.accepted == []
    assert rx.refused("internal") == 0


# ---------------------------------------------------------------- the count itself


CAPS = Caps(resources=3, scopes=4, items=6)


def _request_bytes(resources: int, scopes: int, items: int) -> bytes:
    """Empty items, each resource entry with a schema_url (so no shape is proven by size alone)."""
    scope = _field(2, b"\x12\x00" * items)
    return _field(1, _field(3, b"https://example.com/schema") + scope * scopes) * resources


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 1, 2), None),
        ((4, 1, 1), Over("resources", 4)),
        ((2, 2, 1), None),
        ((1, 5, 1), Over("scopes", 5)),
        ((2, 1, 3), None),
        ((1, 1, 7), Over("items", 7)),
    ],
)
def test_counts_match_decoding(shape: tuple[int, int, int], expected: Over | None) -> None:
    data = _request_bytes(*shape)
    assert count_items(Signal.LOGS.parse(data)) == shape[0] * shape[1] * shape[2]
    assert over_cap(Signal.LOGS, data, CAPS) == expected


def test_unknown_fields_and_groups_count_towards_the_level_they_are_at() -> None:
    group = b"\x5b" + b"\x0a\x00" * 10 + b"\x5c"  # field 11 as a group holding ten fields
    data = _request_bytes(1, 1, 1) + group
    Signal.TRACES.parse(data)  # protobuf accepts it
    assert over_cap(Signal.TRACES, data, Caps(5, 100, 100)) == Over("resources", 6)
    assert over_cap(Signal.TRACES, data, Caps(20, 100, 100)) is None


_VALID_ENTRY = _field(1, _field(3, b"x" * 40))  # one resource entry: past the size gate


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00\x00", id="field-0"),
        pytest.param(b"\x0a\x7f", id="overrun"),
        pytest.param(b"\x0a\xff\xff", id="truncated-varint"),
        pytest.param(b"\x0e", id="wire-type-6"),
        pytest.param(b"\x5b\x0a\x00", id="unclosed-group"),
    ],
)
def test_malformed_wire_is_a_wire_error_where_decoding_fails_too(tail: bytes) -> None:
    data = _VALID_ENTRY + tail
    with pytest.raises(DecodeError):
        Signal.TRACES.parse(data)
    with pytest.raises(WireError):
        over_cap(Signal.TRACES, data, CAPS)
    limits = RequestLimits(RequestLimitsConfig(max_resources_per_request=3), KEY)
    with pytest.raises(ValueError, match=r"^cannot decode ExportTraceServiceRequest: "):
        limits.decode_protobuf(Signal.TRACES, data)


def test_json_counts_ignore_parts_of_the_wrong_type() -> None:
    doc = {"resourceSpans": [{"scopeSpans": "not a list"}, 7, {"scope_spans": [{"spans": [{}] * 7}]}]}
    assert over_cap_json(Signal.TRACES, doc, CAPS) == Over("items", 7)
    assert over_cap_json(Signal.TRACES, {"resourceSpans": {"a": 1}}, CAPS) is None
