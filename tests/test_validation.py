"""Per-item validation: every rule rejects exactly the bad item, the rest survive byte-for-byte."""

from __future__ import annotations

from collections import Counter

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.intake.validation import validate_request
from errorgate.otlp.flat import request_shape
from errorgate.receiver import ValidationConfig
from errorgate.signals import Signal, count_items, iter_log_records, iter_spans
from tests.support.otlp_values import nested

LIMITS = ValidationConfig()
TID = bytes(range(1, 17))
SID = bytes(range(1, 9))


def good_span(name: str, **overrides: object) -> Span:
    fields: dict[str, object] = {
        "trace_id": TID,
        "span_id": SID,
        "name": name,
        "start_time_unix_nano": 1_000,
        "end_time_unix_nano": 2_000,
    }
    fields.update(overrides)
    span = Span(**fields)  # type: ignore[arg-type]
    span.attributes.add(key="http.method", value=AnyValue(string_value="GET"))
    return span


def text(s: str) -> AnyValue:
    return AnyValue(string_value=s)


def attr(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def trace_request(*spans: Span, resource_attrs: list[KeyValue] | None = None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.21.0")
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
    rs.resource.attributes.extend(resource_attrs or [])
    ss = rs.scope_spans.add()
    ss.scope.name = "lib"
    ss.spans.extend(spans)
    return req


def _with_attr(span: Span, kv: KeyValue) -> Span:
    span.attributes.append(kv)
    return span


def _event_with(kv: KeyValue) -> Span:
    span = good_span("event-bad")
    span.events.add(name="exception").attributes.append(kv)
    return span


def _link_with(kv: KeyValue | None = None, **ids: bytes) -> Span:
    span = good_span("link-bad")
    link = span.links.add(trace_id=ids.get("trace_id", TID), span_id=ids.get("span_id", SID))
    if kv is not None:
        link.attributes.append(kv)
    return span


SPAN_CASES = [
    (good_span("short-trace", trace_id=b"12345"), "trace_id must be 16 bytes (got 5)"),
    (good_span("no-trace", trace_id=b""), "trace_id must be 16 bytes (got 0)"),
    (good_span("zero-trace", trace_id=bytes(16)), "trace_id must not be all zeros"),
    (good_span("long-span", span_id=bytes(range(1, 10))), "span_id must be 8 bytes (got 9)"),
    (good_span("zero-span", span_id=bytes(8)), "span_id must not be all zeros"),
    (good_span("bad-parent", parent_span_id=b"abc"), "parent_span_id must be empty or 8 bytes (got 3)"),
    (
        good_span("backwards", start_time_unix_nano=5_000, end_time_unix_nano=4_999),
        "end_time before start_time",
    ),
    (_with_attr(good_span("deep"), attr("x", nested(9))), "attribute nesting deeper than 8"),
    (
        _with_attr(good_span("long"), attr("x", AnyValue(string_value="a" * 65537))),
        "string longer than 65536 bytes",
    ),
    # 22,000 three-byte characters: under the limit in characters, over it in UTF-8 bytes.
    (
        _with_attr(good_span("euro"), attr("x", AnyValue(string_value="€" * 22000))),
        "string longer than 65536 bytes",
    ),
    (
        _with_attr(good_span("deep-long"), attr("x", nested(3))),
        None,  # nesting within the limit is fine
    ),
    (
        _with_attr(good_span("bytes"), attr("x", AnyValue(bytes_value=b"\0" * 65537))),
        "bytes value longer than 65536 bytes",
    ),
    (
        _with_attr(good_span("key"), attr("k" * 65537, AnyValue(int_value=1))),
        "attribute key longer than 65536 bytes",
    ),
    (_event_with(attr("x", nested(10))), "event attribute nesting deeper than 8"),
    (_link_with(attr("x", AnyValue(string_value="b" * 70000))), "link string longer than 65536 bytes"),
    (_link_with(trace_id=b"\x01" * 4), "link trace_id must be 16 bytes (got 4)"),
    (_link_with(span_id=b"\x01" * 4), "link span_id must be 8 bytes (got 4)"),
]


def test_every_span_rule_rejects_only_the_bad_span() -> None:
    spans = [good_span("ok-before")]
    for bad, _ in SPAN_CASES:
        spans.append(bad)
    spans.append(good_span("ok-after", parent_span_id=SID))
    many = good_span("many-attrs")
    del many.attributes[:]
    many.attributes.extend(attr(f"a{i}", AnyValue(int_value=i)) for i in range(1024))
    spans.append(many)
    too_many = good_span("too-many-attrs")
    too_many.attributes.extend(attr(f"a{i}", AnyValue(int_value=i)) for i in range(1024))
    spans.append(too_many)
    req = trace_request(*spans)
    before = count_items(req)
    expected_survivors = (
        ["ok-before"] + [s.name for s, r in SPAN_CASES if r is None] + ["ok-after", "many-attrs"]
    )
    survivors_bytes = {s.name: s.SerializeToString() for s in spans if s.name in expected_survivors}

    rej = validate_request(Signal.TRACES, req, LIMITS)

    kept = [span for _, _, span in iter_spans(req)]
    assert [s.name for s in kept] == expected_survivors
    assert {s.name: s.SerializeToString() for s in kept} == survivors_bytes  # untouched
    expected_reasons = Counter(r for _, r in SPAN_CASES if r is not None)
    expected_reasons["more than 1024 attributes"] += 1
    assert rej.reasons == expected_reasons
    assert rej.count == len(SPAN_CASES) - 1 + 1
    assert count_items(req) + rej.count == before
    rejected = [span.name for _, _, span in iter_spans(rej.request)]
    assert rejected == [s.name for s, r in SPAN_CASES if r is not None] + ["too-many-attrs"]
    # rejected items keep their resource and scope so the dead-letter store has the full context
    rs = rej.request.resource_spans[0]
    assert rs.resource == req.resource_spans[0].resource
    assert rs.schema_url == "https://opentelemetry.io/schemas/1.21.0"
    assert rs.scope_spans[0].scope.name == "lib"


def test_limits_are_inclusive_and_configurable() -> None:
    at_limit = _with_attr(good_span("at-limit"), attr("x", AnyValue(string_value="é" * 32768)))  # 65536 bytes
    depth8 = _with_attr(good_span("depth-8"), attr("x", nested(8)))
    req = trace_request(at_limit, depth8)
    assert not validate_request(Signal.TRACES, req, LIMITS)
    assert count_items(req) == 2

    strict = ValidationConfig(max_attribute_depth=2, max_string_length=10, max_attributes=1)
    cases = {"three-deep": nested(3), "two-deep": nested(2), "eleven": AnyValue(string_value="x" * 11)}
    spans = []
    for name, value in cases.items():
        span = good_span(name)
        span.attributes[0].CopyFrom(attr("x", value))
        spans.append(span)
    spans.append(good_span("two-attrs"))
    spans[-1].attributes.append(attr("y", AnyValue(int_value=1)))
    req = trace_request(*spans)
    req.resource_spans[0].resource.ClearField("attributes")
    rej = validate_request(Signal.TRACES, req, strict)
    assert rej.reasons == Counter(
        {"attribute nesting deeper than 2": 1, "string longer than 10 bytes": 1, "more than 1 attributes": 1}
    )
    assert [s.name for _, _, s in iter_spans(req)] == ["two-deep"]


def test_bad_resource_or_scope_attributes_reject_everything_under_them() -> None:
    req = trace_request(
        good_span("a"), good_span("b"), resource_attrs=[attr("big", AnyValue(string_value="x" * 70000))]
    )
    rs2 = req.resource_spans.add()
    rs2.resource.attributes.add(key="service.name", value=AnyValue(string_value="cart"))
    bad_scope = rs2.scope_spans.add()
    bad_scope.scope.attributes.append(attr("deep", nested(12)))
    bad_scope.spans.append(good_span("c"))
    ok_scope = rs2.scope_spans.add()
    ok_scope.spans.append(good_span("d"))

    rej = validate_request(Signal.TRACES, req, LIMITS)

    assert rej.reasons == Counter(
        {"resource string longer than 65536 bytes": 2, "scope attribute nesting deeper than 8": 1}
    )
    assert rej.count == 3
    # the emptied resource and scope are pruned from what goes on
    assert len(req.resource_spans) == 1
    assert [s.name for _, _, s in iter_spans(req)] == ["d"]
    assert [s.name for _, _, s in iter_spans(rej.request)] == ["a", "b", "c"]


def test_message_summarises_counts_and_reasons() -> None:
    req = trace_request(
        good_span("a", trace_id=b"12345"),
        good_span("b", start_time_unix_nano=9, end_time_unix_nano=1),
        good_span("c", start_time_unix_nano=9, end_time_unix_nano=1),
        good_span("ok"),
    )
    rej = validate_request(Signal.TRACES, req, LIMITS)
    assert rej.message() == (
        "rejected 3 spans: end_time before start_time x2; trace_id must be 16 bytes (got 5) x1"
    )
    clean = trace_request(good_span("ok"))
    none = validate_request(Signal.TRACES, clean, LIMITS)
    assert not none and none.count == 0 and none.message() == ""
    assert count_items(none.request) == 0


def test_log_rules() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    sl = rl.scope_logs.add()
    ok_plain = sl.log_records.add(severity_text="INFO")
    ok_plain.body.string_value = "no trace context at all"
    sl.log_records.add(trace_id=TID, span_id=SID, severity_text="OK-CORRELATED")
    sl.log_records.add(trace_id=b"12345", severity_text="BAD-TRACE")
    sl.log_records.add(trace_id=TID, span_id=b"123", severity_text="BAD-SPAN")
    deep_body = sl.log_records.add(severity_text="DEEP-BODY")
    deep_body.body.CopyFrom(nested(9))
    long_attr = sl.log_records.add(severity_text="LONG-ATTR")
    long_attr.attributes.append(attr("msg", AnyValue(string_value="z" * 65537)))
    survivors = [r.SerializeToString() for r in list(sl.log_records)[:2]]

    rej = validate_request(Signal.LOGS, req, LIMITS)

    assert [r.SerializeToString() for _, _, r in iter_log_records(req)] == survivors
    assert rej.reasons == Counter(
        {
            "trace_id must be empty or 16 bytes (got 5)": 1,
            "span_id must be empty or 8 bytes (got 3)": 1,
            "body attribute nesting deeper than 8": 1,
            "string longer than 65536 bytes": 1,
        }
    )
    assert [r.severity_text for _, _, r in iter_log_records(rej.request)] == [
        "BAD-TRACE",
        "BAD-SPAN",
        "DEEP-BODY",
        "LONG-ATTR",
    ]
    assert rej.message().startswith("rejected 4 log records: ")


def _metrics_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="queue.depth", unit="1")
    for i, value in enumerate(("ok-1", "x" * 70000, "ok-2")):
        dp = gauge.gauge.data_points.add(as_int=i, time_unix_nano=1000 + i)
        dp.attributes.append(attr("queue", AnyValue(string_value=value)))
    unnamed = sm.metrics.add(name="")
    unnamed.sum.data_points.add(as_double=1.0)
    unnamed.sum.data_points.add(as_double=2.0)
    sm.metrics.add(name="no.data")
    counter = sm.metrics.add(name="requests")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = 2
    counter.sum.data_points.add(as_int=7)
    return req


def test_metric_rules_reject_points_individually() -> None:
    req = _metrics_request()
    before = count_items(req)

    rej = validate_request(Signal.METRICS, req, LIMITS)

    metrics = list(req.resource_metrics[0].scope_metrics[0].metrics)
    assert [m.name for m in metrics] == ["queue.depth", "requests"]
    assert [dp.attributes[0].value.string_value for dp in metrics[0].gauge.data_points] == ["ok-1", "ok-2"]
    assert metrics[1].sum.data_points[0].as_int == 7 and metrics[1].sum.is_monotonic
    assert rej.reasons == Counter(
        {
            "data point string longer than 65536 bytes": 1,
            "metric name is empty": 2,
            "metric has no data type": 1,  # counted as a reason though it carries no data points
        }
    )
    assert rej.count == 3  # data points: 1 bad gauge point + 2 under the unnamed metric
    assert count_items(req) + rej.count == before
    rejected = list(rej.request.resource_metrics[0].scope_metrics[0].metrics)
    by_name = {m.name: m for m in rejected}
    assert set(by_name) == {"queue.depth", "", "no.data"}
    # the split metric keeps its identity and only the bad point
    assert by_name["queue.depth"].unit == "1"
    assert [dp.as_int for dp in by_name["queue.depth"].gauge.data_points] == [1]
    assert rej.message().startswith("rejected 3 data points: ")


@pytest.mark.parametrize("signal", list(Signal))
def test_empty_request_is_valid(signal: Signal) -> None:
    req = signal.new_request()
    rej = validate_request(signal, req, LIMITS)
    assert not rej and rej.count == 0


# ---------------------------------------------------------------- the fast path
# Requests without any nested attribute value take a size-gated path that skips the
# per-attribute walk; these cases make sure it still catches everything it must.


def _many(n: int) -> list[KeyValue]:
    return [attr(f"a{i}", AnyValue(int_value=i)) for i in range(n)]


def test_flat_requests_are_checked_as_thoroughly() -> None:
    def with_event_attrs(name: str, n: int) -> Span:
        span = good_span(name)
        span.events.add(name="e").attributes.extend(_many(n))
        return span

    def with_link_attrs(name: str, n: int) -> Span:
        span = good_span(name)
        span.links.add(trace_id=TID, span_id=SID).attributes.extend(_many(n))
        return span

    cases = [
        (good_span("small-ok"), None),
        (with_event_attrs("event-1024", 1024), None),  # mid-size item, count within the limit
        (with_event_attrs("event-1025", 1025), "event more than 1024 attributes"),
        (with_link_attrs("link-1025", 1025), "link more than 1024 attributes"),
        (_with_attr(good_span("long"), attr("x", text("y" * 65537))), "string longer than 65536 bytes"),
        (_with_attr(good_span("big-ok"), attr("x", text("y" * 60000))), None),
        (
            _link_with(trace_id=b"\x01" * 4),
            "link trace_id must be 16 bytes (got 4)",
        ),  # tiny span, still checked
        (good_span("zero", trace_id=bytes(16)), "trace_id must not be all zeros"),
    ]
    span_many = good_span("span-1025")
    span_many.attributes.extend(_many(1024))
    cases.append((span_many, "more than 1024 attributes"))
    req = trace_request(*(s for s, _ in cases))
    assert not request_shape(Signal.TRACES, req.SerializeToString()).nested  # the fast path is taken

    rej = validate_request(Signal.TRACES, req, LIMITS)

    assert [s.name for _, _, s in iter_spans(req)] == [s.name for s, r in cases if r is None]
    assert rej.reasons == Counter(r for _, r in cases if r is not None)


def test_flat_logs_and_metrics() -> None:
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    sl.log_records.add(severity_text="ok").body.string_value = "fine"
    sl.log_records.add(severity_text="long-body").body.string_value = "b" * 70000
    sl.log_records.add(severity_text="many").attributes.extend(_many(1025))
    sl.log_records.add(severity_text="bad-span", span_id=b"\x01")
    rej = validate_request(Signal.LOGS, logs, LIMITS)
    assert [r.severity_text for _, _, r in iter_log_records(logs)] == ["ok"]
    assert rej.reasons == Counter(
        {
            "body string longer than 65536 bytes": 1,
            "more than 1024 attributes": 1,
            "span_id must be empty or 8 bytes (got 1)": 1,
        }
    )

    metrics = ExportMetricsServiceRequest()
    sm = metrics.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="g")
    gauge.gauge.data_points.add(as_int=1).attributes.extend(_many(3))
    gauge.gauge.data_points.add(as_int=2).attributes.extend(_many(1025))
    gauge.gauge.data_points.add(as_int=3).attributes.append(attr("x", text("z" * 70000)))
    small = sm.metrics.add(name="small")
    small.sum.data_points.add(as_int=4)
    rej = validate_request(Signal.METRICS, metrics, LIMITS)
    assert [
        dp.as_int for dp in metrics.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    ] == [1]
    assert metrics.resource_metrics[0].scope_metrics[0].metrics[1].sum.data_points[0].as_int == 4
    assert rej.reasons == Counter(
        {"data point more than 1024 attributes": 1, "data point string longer than 65536 bytes": 1}
    )
    assert rej.count == 2


def test_a_nested_value_anywhere_switches_to_the_thorough_path() -> None:
    # the deep value sits in a large span; a single shallow nested value elsewhere in the
    # request must not hide it, and a flat request must not miss a deep one
    deep = _with_attr(good_span("deep"), attr("x", nested(9)))
    deep.attributes.extend(_many(5))
    shallow = _with_attr(good_span("shallow"), attr("x", nested(2)))
    req = trace_request(shallow, deep)
    assert request_shape(Signal.TRACES, req.SerializeToString()).nested
    rej = validate_request(Signal.TRACES, req, LIMITS)
    assert rej.reasons == Counter({"attribute nesting deeper than 8": 1})
    assert [s.name for _, _, s in iter_spans(req)] == ["shallow"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _resource_with(n: int) -> Resource:
    resource = Resource()
    for _ in range(n):
        resource.attributes.add()  # an empty entry: 2 bytes on the wire
    return resource


def test_wire_sizes_bound_a_singular_field_sent_twice() -> None:
    # Decoding merges the two occurrences of ``resource``: each one alone is small enough to
    # prove "at most 2 attributes" (4 bytes), together they hold 4. The proof must add them up.
    limits = ValidationConfig(max_attributes=2)
    half = _resource_with(2).SerializeToString()
    span = good_span("s").SerializeToString()
    entry = _field(1, half) + _field(1, half) + _field(2, _field(2, span))
    raw = _field(1, entry) + _field(1, _field(2, _field(2, span)))
    req = Signal.TRACES.parse(raw)
    assert len(req.resource_spans[0].resource.attributes) == 4
    rej = validate_request(Signal.TRACES, req, limits, raw)
    assert rej.reasons == Counter({"resource more than 2 attributes": 1})
    assert count_items(req) == 1


def test_wire_sizes_check_each_part_of_a_large_request() -> None:
    # Many small resource entries and one whose span holds a too-long string: only the part
    # that is not small is walked, and the bad span is found wherever it sits.
    spans = [good_span(f"ok{i}") for i in range(40)]
    long_span = _with_attr(good_span("long"), attr("x", text("y" * 65537)))
    many = good_span("many")
    many.attributes.extend(_many(1024))
    req = ExportTraceServiceRequest()
    for i, span in enumerate([*spans[:20], long_span, *spans[20:], many]):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=f"svc{i}"))
        rs.scope_spans.add().spans.append(span)
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for i in range(40):
        sl.log_records.add(severity_text=f"ok{i}", span_id=SID).body.string_value = "fine " * 20
    sl.log_records.add(severity_text="long").body.string_value = "b" * 70000
    sl.log_records.add(severity_text="bad-span", span_id=b"\x01")

    rej = validate_request(Signal.TRACES, req, LIMITS, req.SerializeToString())
    logs_rej = validate_request(Signal.LOGS, logs, LIMITS, logs.SerializeToString())

    assert rej.reasons == Counter({"string longer than 65536 bytes": 1, "more than 1024 attributes": 1})
    assert [s.name for _, _, s in iter_spans(req)] == [s.name for s in spans]
    assert logs_rej.reasons == Counter(
        {"body string longer than 65536 bytes": 1, "span_id must be empty or 8 bytes (got 1)": 1}
    )
    assert count_items(logs) == 40
