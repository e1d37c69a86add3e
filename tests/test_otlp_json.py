"""OTLP/JSON encoding: hex ids, integer enums, round trips, spec-shaped input, PII-free errors."""

from __future__ import annotations

import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.otlp_json import from_json, to_json
from errorgate.signals import Signal

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
            "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: must be a hex string",
        ),
        (
            '{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"secret-4111111111111111"}]}]}]}',
            "resourceSpans.scopeSpans.spans.startTimeUnixNano",
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
    assert "logRecords.attributes.value.intValue" in str(exc.value)
    assert "ssn-123" not in str(exc.value)
