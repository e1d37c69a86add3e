"""OTLP/JSON encoding: hex ids, integer enums, round trips, spec-shaped input, PII-free errors."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.otlp.json_format import from_json, to_json
from errorgate.signals import Signal
from tests.support.receiver_kit import sdk_logs, sdk_metrics, sdk_spans

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")


def _trace_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
    ss = rs.scope_spans.add()
    ss.scope.name = "my.library"
    span = ss.spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        name="GET /cart",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1544712660000000000,
        end_time_unix_nano=1544712661000000000,
    )
    span.attributes.add(key="http.status_code", value=AnyValue(int_value=503))
    span.attributes.add(key="payload", value=AnyValue(bytes_value=b"\x00\x01"))
    span.status.code = 2
    span.status.message = "upstream timed out"
    link = span.links.add(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), span_id=bytes(range(1, 9))
    )
    link.attributes.add(key="k", value=AnyValue(bool_value=True))
    span.events.add(name="exception", time_unix_nano=1544712660500000000)
    return req


def test_trace_json_uses_hex_ids_integer_enums_and_one_line() -> None:
    text = to_json(_trace_request())
    assert "\n" not in text
    doc = json.loads(text)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert span["spanId"] == "eee19b7ec3c1b174"
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0]["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["links"][0]["spanId"] == "0102030405060708"
    assert span["kind"] == 2
    assert span["status"] == {"code": 2, "message": "upstream timed out"}
    assert span["startTimeUnixNano"] == "1544712660000000000"
    assert span["attributes"][0] == {"key": "http.status_code", "value": {"intValue": "503"}}
    # bytes attribute values stay base64 (only ids are hex in OTLP/JSON)
    assert span["attributes"][1] == {"key": "payload", "value": {"bytesValue": "AAE="}}


def test_trace_round_trip_is_exact() -> None:
    req = _trace_request()
    assert from_json(Signal.TRACES, to_json(req)) == req
    assert from_json(Signal.TRACES, to_json(req).encode()) == req


def test_logs_and_metrics_round_trip_with_ids() -> None:
    logs = ExportLogsServiceRequest()
    rec = (
        logs.resource_logs.add()
        .scope_logs.add()
        .log_records.add(trace_id=TRACE_ID, span_id=SPAN_ID, severity_number=17, severity_text="ERROR")
    )
    rec.body.string_value = "payment declined"
    text = to_json(logs)
    rec_doc = json.loads(text)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec_doc["traceId"] == TRACE_ID.hex() and rec_doc["spanId"] == SPAN_ID.hex()
    assert rec_doc["severityNumber"] == 17
    assert from_json(Signal.LOGS, text) == logs

    metrics = ExportMetricsServiceRequest()
    m = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="http.server.duration", unit="ms")
    m.histogram.aggregation_temporality = 2
    dp = m.histogram.data_points.add(count=3, sum=12.5, bucket_counts=[1, 2], explicit_bounds=[5.0])
    dp.exemplars.add(trace_id=TRACE_ID, span_id=SPAN_ID, as_double=4.0)
    text = to_json(metrics)
    hist = json.loads(text)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["histogram"]
    assert hist["aggregationTemporality"] == 2
    assert hist["dataPoints"][0]["exemplars"][0]["traceId"] == TRACE_ID.hex()
    assert from_json(Signal.METRICS, text) == metrics


SPEC_EXAMPLE = """
{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "futureField": {"anything": [1, 2]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0"},
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "",
        "name": "I'm a server span",
        "startTimeUnixNano": 1544712660000000000,
        "end_time_unix_nano": "1544712661000000000",
        "kind": 2,
        "attributes": [{"key": "my.span.attr", "value": {"intValue": 42}}]
      }]
    }]
  }]
}
"""


def test_spec_shaped_input_numbers_strings_snake_case_and_unknown_fields() -> None:
    req = from_json(Signal.TRACES, SPEC_EXAMPLE)
    assert isinstance(req, ExportTraceServiceRequest)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id == TRACE_ID  # upper-case hex accepted
    assert span.span_id == SPAN_ID
    assert span.parent_span_id == b""
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert span.kind == Span.SPAN_KIND_SERVER
    assert list(span.attributes) == [KeyValue(key="my.span.attr", value=AnyValue(int_value=42))]
    assert req.resource_spans[0].resource.attributes[0].value.string_value == "my.service"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not-hex-secret-4111111111111111"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].traceId: not a hex string",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"links":[{"spanId":12}]}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: invalid value of type int",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"secret-4111111111111111"}]}]}]}',
            "resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: expected an integer",
        ),
        ('{"resourceSpans": {"oops": 1}}', "resourceSpans: expected an array"),
        ("[1, 2]", "must be an object"),
        ('{"resourceSpans": [', "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
    ],
)
def test_bad_json_names_the_field_without_quoting_values(body: str | bytes, expected: str) -> None:
    with pytest.raises(ValueError) as exc:
        from_json(Signal.TRACES, body)
    message = str(exc.value)
    assert expected in message
    assert "4111111111111111" not in message
    assert "secret" not in message


def test_bad_attribute_value_in_logs_is_reported_by_path() -> None:
    body = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[{"key":"k","value":{"intValue":"ssn-123"}}]}]}]}]}'
    with pytest.raises(ValueError) as exc:
        from_json(Signal.LOGS, body)
    assert (
        "resourceLogs[0].scopeLogs[0].logRecords[0].attributes[0].value.intValue: expected an integer"
        in str(exc.value)
    )
    assert "ssn-123" not in str(exc.value)


# ---------------------------------------------------------------- agreement with json_format


def _reference_json(message: Message) -> dict[str, Any]:
    """protobuf's own JSON mapping with the OTLP id rule applied: the spec's definition."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(doc)
    return doc


def _edge_case_metrics() -> ExportMetricsServiceRequest:
    req = encode_metrics(sdk_metrics())
    sm = req.resource_metrics[0].scope_metrics.add()
    g = sm.metrics.add(name="edge")
    g.gauge.data_points.add(as_int=-(2**63), time_unix_nano=2**64 - 1)
    g.gauge.data_points.add(as_double=0.0)  # a oneof member set to its default is still present
    g.gauge.data_points.add(as_double=float("inf"))
    g.gauge.data_points.add()  # an empty element keeps its position
    eh = sm.metrics.add(name="exp").exponential_histogram
    eh.aggregation_temporality = 1
    dp = eh.data_points.add(scale=-3, zero_count=2, count=7, sum=-1.5, min=-2.0, max=0.0)
    dp.positive.offset = -4
    dp.positive.bucket_counts.extend([1, 2, 3])
    dp.exemplars.add(trace_id=TRACE_ID, span_id=SPAN_ID, as_int=-5)
    s = sm.metrics.add(name="summary").summary.data_points.add(count=3, sum=6.0)
    s.quantile_values.add(quantile=0.5, value=2.0)
    return req


def _edge_case_traces() -> ExportTraceServiceRequest:
    req = _trace_request()
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="neg", value=AnyValue(int_value=-42))
    span.attributes.add(key="zero", value=AnyValue(int_value=0))
    span.attributes.add(key="empty", value=AnyValue())
    arr = span.attributes.add(key="arr").value.array_value
    arr.values.add(double_value=-0.5)
    arr.values.add().kvlist_value.values.add(key="k", value=AnyValue(bool_value=False))
    span.flags = 0x100
    span.dropped_attributes_count = 3
    req.resource_spans[0].scope_spans[0].spans.add()  # an all-default span
    return req


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(_edge_case_traces(), id="traces"),
        pytest.param(encode_spans(sdk_spans()), id="sdk-traces"),
        pytest.param(encode_logs(sdk_logs()), id="sdk-logs"),
        pytest.param(_edge_case_metrics(), id="metrics"),
    ],
)
def test_encoding_matches_protobuf_json_mapping_and_round_trips(request_: Any) -> None:
    text = to_json(request_)
    assert json.loads(text) == _reference_json(request_)
    assert from_json(Signal.of(request_), text) == request_
    # and what protobuf's mapping (ids converted) produces parses back to the same request
    assert from_json(Signal.of(request_), json.dumps(_reference_json(request_))) == request_


def test_non_finite_doubles_use_the_json_mapping_strings() -> None:
    req = ExportMetricsServiceRequest()
    g = req.resource_metrics.add().scope_metrics.add().metrics.add(name="g").gauge
    for v in (float("nan"), float("inf"), float("-inf")):
        g.data_points.add(as_double=v)
    doc = json.loads(to_json(req))
    points = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"]
    assert [p["asDouble"] for p in points] == ["NaN", "Infinity", "-Infinity"]
    back = from_json(Signal.METRICS, to_json(req))
    values = [p.as_double for p in back.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_input_leniency_enum_names_numbers_as_strings_and_nulls() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": None,
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": SPAN_ID.hex(),
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": 1.0e18,
                                "endTimeUnixNano": "2e18",
                                "droppedEventsCount": "4",
                                "status": {"code": "STATUS_CODE_ERROR"},
                                "attributes": [{"key": "d", "value": {"doubleValue": "1.5"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    req = from_json(Signal.TRACES, json.dumps(body))
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.kind == Span.SPAN_KIND_CLIENT and span.status.code == 2
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (10**18, 2 * 10**18)
    assert span.dropped_events_count == 4
    assert span.attributes[0].value.double_value == 1.5
    assert not req.resource_spans[0].HasField("resource")


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ({"startTimeUnixNano": -1}, "startTimeUnixNano: integer out of range for a 64-bit field"),
        (
            {"droppedAttributesCount": 2**40},
            "droppedAttributesCount: integer out of range for a 32-bit field",
        ),
        ({"startTimeUnixNano": "1.5"}, "startTimeUnixNano: expected an integer, got a fraction"),
        ({"name": 5}, "name: invalid value of type int"),
        ({"kind": "SPAN_KIND_SECRET"}, "kind: unknown enum value name"),
        ({"attributes": {"k": "v"}}, "attributes: expected an array, got dict"),
        ({"status": "ok"}, "status: expected an object, got str"),
        (
            {"attributes": [{"key": "b", "value": {"bytesValue": "***secret***"}}]},
            "bytesValue: not valid base64",
        ),
        # JSON escapes lone surrogates, UTF-8 cannot hold them (found by tests/fuzz_decode.py):
        # the enum lookup raised SystemError, the string's error quoted the character.
        ({"kind": "secret\ud800"}, "kind: unknown enum value name"),
        ({"name": "secret\udc80"}, "name: string is not valid Unicode (a lone surrogate)"),
        (
            {"attributes": [{"key": "k", "value": {"arrayValue": {"values": [{"stringValue": "\ud800"}]}}}]},
            "attributes[0].value.arrayValue.values[0].stringValue: string is not valid Unicode",
        ),
    ],
)
def test_type_errors_name_the_field_and_position(span: dict[str, Any], expected: str) -> None:
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "ok"}, span]}]}]})
    with pytest.raises(ValueError) as exc:
        from_json(Signal.TRACES, body)
    assert str(exc.value).startswith("resourceSpans[0].scopeSpans[0].spans[1].")
    assert expected in str(exc.value)
    assert "secret" not in str(exc.value).lower().replace("span_kind_secret", "")
    assert "\ud800" not in str(exc.value) and "\udc80" not in str(exc.value)
