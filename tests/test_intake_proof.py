"""The native proof of validity (errorgate.intake.proof): whenever it proves a request, the
request decodes, validation rejects nothing, the item count is right and "canonical" bytes are
what serializing gives back. Usual traffic (bench templates, the OpenTelemetry SDK's exporters)
is proven; anything validation rejects is not; hostile bytes never crash it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.traffic import build_templates, patched
from errorgate.intake import proof
from errorgate.intake.proof import Proof, prove_valid
from errorgate.intake.validation import validate_request
from errorgate.otlp.decode import decode
from errorgate.receiver.config import ValidationConfig
from errorgate.signals import Signal, count_items
from tests.support.otlp_values import nested
from tests.support.receiver_kit import sdk_logs, sdk_metrics, sdk_spans
from tests.support.wire_mutations import MUTATIONS

native = pytest.mark.skipif(
    not proof.NATIVE,
    reason="errorgate_native is not installed (no Rust toolchain at `make venv`?) or ERRORGATE_NATIVE=0",
)

DEFAULT = ValidationConfig()
TIGHT = ValidationConfig(max_string_length=16, max_attributes=3, max_attribute_depth=2)
FLAT = ValidationConfig(max_attribute_depth=1)
TINY = ValidationConfig(max_string_length=1, max_attributes=1, max_attribute_depth=1)
DEEP = ValidationConfig(max_attribute_depth=1000)
ONE = ValidationConfig(max_attributes=1)
CONFIGS = (DEFAULT, TIGHT, FLAT, TINY, DEEP)

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("00f067aa0ba902b7")


def assert_sound(signal: Signal, data: bytes, limits: ValidationConfig) -> Proof | None:
    """prove_valid's answer, after checking every promise a Proof makes."""
    found = prove_valid(signal, data, limits)
    if found is None:
        return None
    request = decode(signal, data)  # raises if upb refuses the bytes or they hold nothing
    items = count_items(request)
    again = request.SerializeToString()
    rejections = validate_request(signal, request, limits, data)
    assert not rejections, rejections.message()
    assert found.items == items
    if found.canonical:
        assert again == data
    return found


# ---------------------------------------------------------------- hand-made requests


def traces(*spans: dict[str, object], resources: int = 1, scopes: int = 1) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(resources):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
        for _ in range(scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = "tests"
            for fields in spans:
                span = ss.spans.add(
                    trace_id=TRACE_ID,
                    span_id=SPAN_ID,
                    name="GET /",
                    start_time_unix_nano=10,
                    end_time_unix_nano=20,
                )
                for key, value in fields.items():
                    if key == "attributes":
                        assert isinstance(value, list)
                        span.attributes.extend(value)
                    else:
                        setattr(span, key, value)
    return req


def span_with(**fields: object) -> bytes:
    return traces(fields).SerializeToString()


def logs(**fields: object) -> bytes:
    req = ExportLogsServiceRequest()
    record = req.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=5, severity_text="INFO")
    record.body.string_value = "payment declined"
    for key, value in fields.items():
        if key == "body":
            assert isinstance(value, AnyValue)
            record.body.CopyFrom(value)
        elif key == "attributes":
            assert isinstance(value, list)
            record.attributes.extend(value)
        else:
            setattr(record, key, value)
    return req.SerializeToString()


def edge_metrics() -> ExportMetricsServiceRequest:
    """Every metric type, oneof members at their defaults, signed and packed fields."""
    req = encode_metrics(sdk_metrics())
    sm = req.resource_metrics[0].scope_metrics.add()
    g = sm.metrics.add(name="edge")
    g.gauge.data_points.add(as_int=-(2**63), time_unix_nano=2**64 - 1)
    g.gauge.data_points.add(as_double=0.0)
    g.gauge.data_points.add()
    eh = sm.metrics.add(name="exp").exponential_histogram
    eh.aggregation_temporality = 1
    dp = eh.data_points.add(scale=-3, zero_count=2, count=7, sum=-1.5, min=-2.0, max=0.0)
    dp.positive.offset = -4
    dp.positive.bucket_counts.extend([1, 2, 3, 2**63])
    dp.exemplars.add(trace_id=TRACE_ID, span_id=SPAN_ID, as_int=-5)
    s = sm.metrics.add(name="summary").summary.data_points.add(count=3, sum=6.0)
    s.quantile_values.add(quantile=0.5, value=2.0)
    h = sm.metrics.add(name="hist").histogram.data_points.add(
        count=2, bucket_counts=[1, 1], explicit_bounds=[0.5]
    )
    h.attributes.add(key="route", value=AnyValue(string_value="/cart"))
    sm.metrics.add(name="empty-sum").sum.is_monotonic = True
    return req


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def nested_bytes(levels: int) -> bytes:
    """``nested(levels)`` encoded by hand (upb refuses to build values that deep in Python)."""
    value = field(1, b"leaf")
    for i in range(levels - 1):
        value = field(6, field(1, field(1, b"k") + field(2, value))) if i % 2 else field(5, field(1, value))
    return value


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(num: int, payload: bytes) -> bytes:
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def wrap_span(span: bytes) -> bytes:
    """A trace request around one span's encoded fields."""
    return field(1, field(2, field(2, span)))


SPAN_FIELDS = [
    field(1, TRACE_ID),
    field(2, SPAN_ID),
    field(5, b"GET /"),
    bytes([7 << 3 | 1]) + (10).to_bytes(8, "little"),
    bytes([8 << 3 | 1]) + (20).to_bytes(8, "little"),
]


def bench_corpus() -> Iterator[tuple[str, Signal, bytes]]:
    for i, template in enumerate(build_templates()):
        yield f"bench-{i}-{template.signal}", Signal(template.signal), patched(template, 41 + i)
    for i, template in enumerate(build_templates(seed=3, unique_bodies=True, body_chars=400)):
        yield f"bench-bodies-{i}-{template.signal}", Signal(template.signal), patched(template, i)


def sdk_corpus() -> Iterator[tuple[str, Signal, bytes]]:
    yield "sdk-traces", Signal.TRACES, encode_spans(sdk_spans(n_children=20)).SerializeToString()
    yield "sdk-logs", Signal.LOGS, encode_logs(sdk_logs()).SerializeToString()
    yield "sdk-metrics", Signal.METRICS, encode_metrics(sdk_metrics()).SerializeToString()


def _span_with_link(trace_id: bytes, span_id: bytes, attributes: int = 1) -> bytes:
    req = traces({})
    span = req.resource_spans[0].scope_spans[0].spans[0]
    link = span.links.add(trace_id=trace_id, span_id=span_id)
    for i in range(attributes):
        link.attributes.add(key=f"a{i}", value=AnyValue(int_value=i))
    return req.SerializeToString()


def _points(attributes: int) -> bytes:
    req = ExportMetricsServiceRequest()
    point = (
        req.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points.add(as_int=1)
    )
    for i in range(attributes):
        point.attributes.add(key=f"a{i}", value=AnyValue(int_value=i))
    return req.SerializeToString()


USUAL: list[tuple[str, Signal, bytes]] = [
    *bench_corpus(),
    *sdk_corpus(),
    ("edge-metrics", Signal.METRICS, edge_metrics().SerializeToString()),
    ("many-resources", Signal.TRACES, traces({}, {}, resources=200, scopes=3).SerializeToString()),
    ("link", Signal.TRACES, _span_with_link(TRACE_ID, bytes(8))),
    ("parent", Signal.TRACES, span_with(parent_span_id=PARENT_ID)),
    ("points", Signal.METRICS, _points(3)),
    ("logs-no-ids", Signal.LOGS, logs()),
    ("logs-ids", Signal.LOGS, logs(trace_id=TRACE_ID, span_id=SPAN_ID)),
    ("nested-3", Signal.TRACES, span_with(attributes=[kv("n", nested(3))])),
    ("empty-resource", Signal.TRACES, b"\x0a\x00"),
]


@native
@pytest.mark.parametrize(("name", "signal", "data"), USUAL, ids=[u[0] for u in USUAL])
def test_usual_requests_are_proven_canonical(name: str, signal: Signal, data: bytes) -> None:
    found = assert_sound(signal, data, DEFAULT)
    assert found is not None and found.canonical, name
    for limits in CONFIGS:
        assert_sound(signal, data, limits)


REJECTED: list[tuple[str, Signal, bytes, ValidationConfig]] = [
    ("zero-trace-id", Signal.TRACES, span_with(trace_id=bytes(16)), DEFAULT),
    ("short-trace-id", Signal.TRACES, span_with(trace_id=TRACE_ID[:8]), DEFAULT),
    ("long-trace-id", Signal.TRACES, span_with(trace_id=TRACE_ID + b"\x01"), DEFAULT),
    ("no-trace-id", Signal.TRACES, span_with(trace_id=b""), DEFAULT),
    ("zero-span-id", Signal.TRACES, span_with(span_id=bytes(8)), DEFAULT),
    ("short-span-id", Signal.TRACES, span_with(span_id=SPAN_ID[:4]), DEFAULT),
    ("short-parent", Signal.TRACES, span_with(parent_span_id=PARENT_ID[:4]), DEFAULT),
    ("end-before-start", Signal.TRACES, span_with(start_time_unix_nano=30), DEFAULT),
    ("link-short-trace", Signal.TRACES, _span_with_link(TRACE_ID[:15], SPAN_ID), DEFAULT),
    ("link-short-span", Signal.TRACES, _span_with_link(TRACE_ID, b""), DEFAULT),
    ("link-attributes", Signal.TRACES, _span_with_link(TRACE_ID, SPAN_ID, 2), ONE),
    ("long-string", Signal.TRACES, span_with(attributes=[kv("k", AnyValue(string_value="x" * 17))]), TIGHT),
    ("long-utf8", Signal.TRACES, span_with(attributes=[kv("k", AnyValue(string_value="é" * 9))]), TIGHT),
    ("long-key", Signal.TRACES, span_with(attributes=[kv("k" * 17, AnyValue(int_value=1))]), TIGHT),
    ("long-bytes", Signal.TRACES, span_with(attributes=[kv("k", AnyValue(bytes_value=b"x" * 17))]), TIGHT),
    ("many-attributes", Signal.TRACES, span_with(attributes=[kv(f"k{i}", AnyValue(int_value=i)) for i in range(4)]), TIGHT),
    ("too-deep", Signal.TRACES, span_with(attributes=[kv("n", nested(3))]), TIGHT),
    ("too-deep-4", Signal.TRACES, span_with(attributes=[kv("n", nested(4))]), ValidationConfig(max_attribute_depth=3)),
    ("kvlist-entries", Signal.TRACES, span_with(attributes=[kv("n", AnyValue(kvlist_value={"values": [kv(f"k{i}", AnyValue()) for i in range(4)]}))]), TIGHT),
    ("nested-long-string", Signal.TRACES, span_with(attributes=[kv("n", nested(2, "x" * 17))]), TIGHT),
    ("nested-long-key", Signal.TRACES, span_with(attributes=[kv("n", nested(3, "x"))]), ValidationConfig(max_string_length=1)),
    ("log-short-trace", Signal.LOGS, logs(trace_id=TRACE_ID[:8]), DEFAULT),
    ("log-short-span", Signal.LOGS, logs(span_id=SPAN_ID[:7]), DEFAULT),
    ("log-long-body", Signal.LOGS, logs(body=AnyValue(string_value="x" * 17)), TIGHT),
    ("log-long-bytes-body", Signal.LOGS, logs(body=AnyValue(bytes_value=b"x" * 17)), TIGHT),
    ("log-deep-body", Signal.LOGS, logs(body=nested(2)), FLAT),
    ("log-attributes", Signal.LOGS, logs(attributes=[kv(f"k{i}", AnyValue(int_value=i)) for i in range(2)]), ONE),
    ("metric-no-name", Signal.METRICS, ExportMetricsServiceRequest(resource_metrics=[{"scope_metrics": [{"metrics": [{"gauge": {"data_points": [{}]}}]}]}]).SerializeToString(), DEFAULT),
    ("metric-no-data", Signal.METRICS, ExportMetricsServiceRequest(resource_metrics=[{"scope_metrics": [{"metrics": [{"name": "m"}]}]}]).SerializeToString(), DEFAULT),
    ("point-attributes", Signal.METRICS, _points(2), ONE),
]  # fmt: skip


@native
@pytest.mark.parametrize(("name", "signal", "data", "limits"), REJECTED, ids=[r[0] for r in REJECTED])
def test_what_validation_rejects_is_not_proven(
    name: str, signal: Signal, data: bytes, limits: ValidationConfig
) -> None:
    assert validate_request(signal, decode(signal, data), limits, data), f"{name}: the case must be invalid"
    assert prove_valid(signal, data, limits) is None
    # The same bytes are proven where the limits allow them (the checker mirrors, not just refuses).
    if limits is not DEFAULT and not validate_request(signal, decode(signal, data), DEFAULT, data):
        assert assert_sound(signal, data, DEFAULT) is not None


@native
def test_nesting_is_proven_up_to_the_configured_depth_and_no_further() -> None:
    for levels in range(1, 12):
        data = span_with(attributes=[kv("n", nested(levels))])
        for depth in range(1, 12):
            limits = ValidationConfig(max_attribute_depth=depth)
            found = assert_sound(Signal.TRACES, data, limits)
            assert (found is not None) == (levels <= depth), (levels, depth)
    # Empty lists at the limit are fine for validation, and so for the proof.
    data = span_with(attributes=[kv("e", AnyValue(array_value={})), kv("l", AnyValue(kvlist_value={}))])
    assert assert_sound(Signal.TRACES, data, FLAT) is not None


@native
def test_very_deep_values_are_declined_without_recursing_past_the_bound() -> None:
    def deep(levels: int) -> bytes:
        return wrap_span(b"".join(SPAN_FIELDS) + field(9, field(1, b"n") + field(2, nested_bytes(levels))))

    # Arrays add two messages of nesting, key/value lists three: 24 levels are 63 messages deep.
    assert assert_sound(Signal.TRACES, deep(20), DEEP) is not None
    assert assert_sound(Signal.TRACES, deep(24), DEEP) is not None
    # Past the checker's bound (64 messages) but within upb's (100): declined all the same.
    Signal.TRACES.parse(deep(30))
    for levels in (25, 30, 40, 60):
        assert assert_sound(Signal.TRACES, deep(levels), DEEP) is None
    # Hand-made nesting far beyond upb's recursion limit: 5000 empty array levels.
    value = b""
    for _ in range(5000):
        value = field(5, field(1, value))
    data = wrap_span(b"".join(SPAN_FIELDS) + field(9, field(1, b"k") + field(2, value)))
    assert prove_valid(Signal.TRACES, data, DEEP) is None


@native
def test_unusual_encodings_are_proven_without_canonical_or_declined() -> None:
    base = b"".join(SPAN_FIELDS)
    assert assert_sound(Signal.TRACES, wrap_span(base), DEFAULT) == Proof(1, True)
    # Fields out of order and non-shortest varints decode fine, but are not what upb writes.
    reordered = wrap_span(b"".join(reversed(SPAN_FIELDS)))
    assert assert_sound(Signal.TRACES, reordered, DEFAULT) == Proof(1, False)
    long_len = bytes([1 << 3 | 2, 0x90, 0x80, 0x80, 0x80, 0x00]) + TRACE_ID
    assert assert_sound(Signal.TRACES, wrap_span(long_len + base[18:]), DEFAULT) == Proof(1, False)
    zero_kind = bytes([6 << 3, 0])  # a default value written explicitly
    assert assert_sound(Signal.TRACES, wrap_span(base + zero_kind), DEFAULT) == Proof(1, False)
    # A repeated singular field (decoding keeps the last), an unknown field, a group: declined.
    declined = {
        "twice": wrap_span(base + field(5, b"POST /")),
        "unknown": wrap_span(base + field(99, b"x")),
        "unknown-top": field(1, field(2, field(2, base))) + field(7, b""),
        "wrong-wire-type": wrap_span(base + bytes([5 << 3, 1])),
        "group": wrap_span(base + bytes([17 << 3 | 3, 17 << 3 | 4])),
        "bad-utf8": wrap_span(base + field(3, b"\xff\xfe")),
        "surrogate": wrap_span(base + field(3, b"\xed\xa0\x80")),
        "oneof-twice": wrap_span(
            base + field(9, field(1, b"k") + field(2, field(1, b"s") + bytes([3 << 3, 1])))
        ),
        "empty": b"",
        # upb reads tags and lengths as 32-bit varints of at most 5 bytes.
        "six-byte-tag": wrap_span(base + b"\x9a\x80\x80\x80\x80\x00\x01x"),
        "six-byte-length": wrap_span(base + b"\x1a\x81\x80\x80\x80\x80\x00x"),
        "six-byte-top-length": b"\x0a\x80\x80\x80\x80\x80\x00",
        "overlong-varint": wrap_span(base + bytes([6 << 3]) + b"\xff" * 10 + b"\x01"),
    }
    for name, data in declined.items():
        assert assert_sound(Signal.TRACES, data, DEFAULT) is None, name
    with pytest.raises(DecodeError):
        Signal.TRACES.parse(declined["bad-utf8"])


@native
def test_every_truncation_of_a_request_is_sound() -> None:
    # (The larger duplicates of the bench shapes aside: every cut is a full scan.)
    corpus = [
        (s, d) for name, s, d in USUAL if name != "many-resources" and not name.startswith("bench-bodies")
    ]
    proven = 0
    for signal, data in corpus:
        for end in range(len(data)):
            proven += assert_sound(signal, data[:end], DEFAULT) is not None
    # Cuts between resource entries leave valid, shorter requests: those are proven too.
    assert proven >= 50


@native
def test_random_mutations_of_real_requests_stay_sound() -> None:
    rng = random.Random(15)
    corpus = [(s, d) for _, s, d in USUAL if 0 < len(d) < 20000]
    proven = declined = 0
    deadline = time.monotonic() + 8
    for i in range(4000):
        signal, data = rng.choice(corpus)
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 3))):
            if buf:
                rng.choice(MUTATIONS)(rng, buf)
        found = assert_sound(signal, bytes(buf), rng.choice(CONFIGS))
        proven += found is not None
        declined += found is None
        assert time.monotonic() < deadline, f"too slow after {i} mutations"
    print(f"{proven} proven, {declined} declined")
    # Both outcomes occur: most flips land in values (still valid), many break the structure.
    assert proven > 200 and declined > 200, (proven, declined)


@native
def test_wrong_signal_and_random_bytes_never_crash() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(64))
        for signal in Signal:
            assert_sound(signal, data, DEFAULT)
    for _, signal, data in USUAL:
        for other in Signal:
            if other is not signal:
                assert_sound(other, data, DEFAULT)


def test_fallback_proves_nothing_and_environment_turns_native_off(monkeypatch: pytest.MonkeyPatch) -> None:
    data = patched(build_templates()[0], 1)
    monkeypatch.setattr(proof, "_native", None)
    assert prove_valid(Signal.TRACES, data, DEFAULT) is None
    code = (
        "from errorgate.intake import proof; from errorgate.receiver.config import ValidationConfig;"
        "from errorgate.signals import Signal; import sys;"
        "print(proof.NATIVE, proof.prove_valid(Signal.TRACES, sys.stdin.buffer.read(), ValidationConfig()))"
    )
    env = {**os.environ, "ERRORGATE_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], input=data, env=env, capture_output=True, check=True)
    assert out.stdout.decode().split() == ["False", "None"]


@native
def test_native_is_on_by_default_and_proves_a_bench_request() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ERRORGATE_NATIVE"}
    code = "from errorgate.intake import proof; print(proof.NATIVE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert out.stdout.decode().strip() == "True"
    data = patched(build_templates()[0], 2)
    assert prove_valid(Signal.TRACES, data, DEFAULT) == Proof(50, True)
