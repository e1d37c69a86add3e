"""Distinctive PII and secrets planted in every OTLP location, sent with the real OpenTelemetry SDK,
plus decoys that look sensitive but are telemetry identifiers and must survive redaction.

``PLANTED`` values are chosen so each is unique in the whole test run: finding one anywhere
(sink, logs, metrics, data directory) is a leak, not a coincidence.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import grpc
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context


def luhn_complete(prefix: str) -> str:
    """``prefix`` plus the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return prefix + str((10 - total % 10) % 10)


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


CARD = luhn_complete("453957876362148")  # Visa BIN, Luhn-valid
JWT = ".".join(
    [
        _b64({"alg": "HS256", "typ": "JWT"}),
        _b64({"sub": "kq7-customer-88213", "name": "Zelda Quixote", "iat": 1716239022}),
        "Qm9ndXNTaWduYXR1cmVGb3JUZXN0c09ubHlYeXp6eTEyMzQ1Njc4OTA",
    ]
)

# name -> raw value. Every one must never be seen in clear outside the client.
PLANTED: dict[str, str] = {
    "email": "zelda.quixote@example.org",
    "card": CARD,
    "ssn": "536-22-8471",
    "phone": "+44 20 7946 0958",
    "client_ip": "81.2.69.142",
    "jwt": JWT,
    "aws_key": "AKIAZ7QW3ERT5YUI8OPL",
    "password": "Hunter2Quokka!9",
    "bearer": "f3Zq8LmN2vR7tY1wXk9PbD4sHc6JgA0e",
    "person": "Margaret Thornbury",
    "user_id": "kq7-customer-88213",  # under ``user.id``: encrypt's default rules apply
}
# Fragments that identify a planted value even when a recognizer kept part of it (the card's
# last four digits are allowed by PCI; its first twelve are not).
FRAGMENTS: dict[str, str] = {
    "email_local": "zelda.quixote",
    "card_head": CARD[:12],
    "phone_digits": "7946 0958",
    "jwt_payload": JWT.split(".")[1],
    "surname": "Thornbury",
}

ORDER_UUID = "3f2b8c1e-9d4a-4e6f-8b2a-1c5d7e9f0a3b"
# key -> value that must arrive unchanged on the spans that carry it.
DECOY_SPAN_ATTRIBUTES: dict[str, object] = {
    "http.route": "/api/orders/{id}",
    "order.id": ORDER_UUID,
    "server.address": "orders-db.internal",
    "http.response.status_code": 503,
    "error.code": "ERR_PAYMENT_4021",
    "retry.backoff": "250ms",
}
SERVICE_VERSION = "1.2.3.4"


NAMES = frozenset({"person", "surname"})


def in_clear(blob: bytes | str, ignore: frozenset[str] = frozenset()) -> list[str]:
    """Names of planted values (or identifying fragments) found in ``blob``, except ``ignore``."""
    data = blob.encode() if isinstance(blob, str) else blob
    found = [name for name, value in PLANTED.items() if value.encode() in data]
    found += [name for name, value in FRAGMENTS.items() if value.encode() in data]
    # JSON output escapes characters such as "+" differently; compare the JSON-escaped forms too.
    text = data.decode(errors="replace")
    found += [
        f"{name}(json)"
        for name, value in PLANTED.items()
        if json.dumps(value)[1:-1] != value and json.dumps(value)[1:-1] in text
    ]
    return sorted(set(found) - ignore - {f"{n}(json)" for n in ignore})


@dataclass
class Sent:
    """What a client sent (ids that must survive unchanged)."""

    trace_ids: list[int] = field(default_factory=list)
    span_ids: list[int] = field(default_factory=list)
    spans: int = 0
    log_records: int = 0
    points: int = 0


def _exporters(protocol: str, grpc_endpoint: str, http_endpoint: str) -> tuple[object, object, object]:
    if protocol == "grpc":
        return (
            GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True),
            GrpcLogExporter(endpoint=grpc_endpoint, insecure=True),
            GrpcMetricExporter(endpoint=grpc_endpoint, insecure=True),
        )
    return (
        HttpSpanExporter(endpoint=f"http://{http_endpoint}/v1/traces"),
        HttpLogExporter(endpoint=f"http://{http_endpoint}/v1/logs"),
        HttpMetricExporter(endpoint=f"http://{http_endpoint}/v1/metrics"),
    )


def _raise_with_pii() -> None:
    p = PLANTED
    raise ValueError(
        f"charge failed for {p['person']} <{p['email']}> card {p['card']} ssn {p['ssn']} "
        f"callback {p['phone']} from {p['client_ip']} key {p['aws_key']}"
    )


def send_pii_traffic(protocol: str, grpc_endpoint: str, http_endpoint: str, service: str) -> Sent:
    """One error trace (3 spans, PII everywhere), 3 log records and 2 metric points, over
    ``protocol`` ("grpc" or "http") with the real SDK. Raises if the gateway refused any export."""
    p = PLANTED
    sent = Sent()
    span_exp, log_exp, metric_exp = _exporters(protocol, grpc_endpoint, http_endpoint)
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": SERVICE_VERSION,
            "deployment.environment": "prod",
            "owner.contact": p["email"],
            "client.address": p["client_ip"],
        }
    )
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(span_exp))  # type: ignore[arg-type]
    tracer = tp.get_tracer("pii-e2e")
    with tracer.start_as_current_span(f"GET /users/{p['email']}/cards", kind=SpanKind.SERVER) as root:
        root.set_attributes({k: v for k, v in DECOY_SPAN_ATTRIBUTES.items()})  # type: ignore[misc]
        root.set_attribute("client.address", p["client_ip"])
        root.set_attribute("http.request.header.authorization", f"Bearer {p['bearer']}")
        root.set_attribute("url.full", f"https://shop.example.com/login?user=bob&password={p['password']}")
        root.set_attribute("customer.ssn_note", f"ssn {p['ssn']} on file")
        root.set_attribute("payment.card", p["card"])
        root.set_attribute("auth.jwt_header", p["jwt"])
        root.set_attribute("deploy.aws_key_id", p["aws_key"])
        root.set_attribute("customer.phone", p["phone"])
        root.set_attribute("user.id", p["user_id"])
        root.add_event(
            f"notify {p['email']} by sms {p['phone']}",
            {"note": f"card {p['card']} jwt {p['jwt']}", "order.id": ORDER_UUID},
        )
        with tracer.start_as_current_span("charge card", kind=SpanKind.CLIENT) as child:
            child.set_attributes({k: v for k, v in DECOY_SPAN_ATTRIBUTES.items()})  # type: ignore[misc]
            try:
                _raise_with_pii()
            except ValueError as e:
                child.record_exception(e)
                child.set_status(Status(StatusCode.ERROR, f"declined for {p['person']} card {p['card']}"))
            child_ctx = child.get_span_context()
        with tracer.start_as_current_span(
            "audit write",
            links=[Link(child_ctx, {"linked.customer": p["email"], "linked.ssn": f"ssn {p['ssn']}"})],
        ) as third:
            third.set_attribute("server.address", "orders-db.internal")
        root.set_status(Status(StatusCode.ERROR, f"upstream failed for {p['email']}"))
    ctx = root.get_span_context()
    sent.trace_ids.append(ctx.trace_id)
    sent.span_ids += [ctx.span_id, child_ctx.span_id, third.get_span_context().span_id]
    sent.spans += 3
    if not tp.force_flush():
        raise RuntimeError("span export did not finish")
    tp.shutdown()

    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))  # type: ignore[arg-type]
    logger = lp.get_logger("pii-e2e")
    trace_ctx = set_span_in_context(root)
    logger.emit(
        body=f"Payment declined for customer {p['person']} ({p['email']}, {p['phone']})",
        severity_number=SeverityNumber.ERROR,
        severity_text="ERROR",
        attributes={
            "client.address": p["client_ip"],
            "http.request.header.authorization": f"Bearer {p['bearer']}",
            "url.full": f"https://shop.example.com/login?password={p['password']}",
            "order.id": ORDER_UUID,
        },
        context=trace_ctx,
    )
    logger.emit(
        body={
            "message": f"refund issued to {p['person']}",
            "card": p["card"],
            "ssn": p["ssn"],
            "nested": {"jwt": p["jwt"], "aws": p["aws_key"], "order.id": ORDER_UUID},
            "lines": [f"mail {p['email']}", f"call {p['phone']}"],
        },
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        attributes={"error.code": "ERR_PAYMENT_4021"},
        context=trace_ctx,
    )
    logger.emit(
        body=f"login ok user={p['email']} token={p['jwt']}",
        severity_number=SeverityNumber.INFO,
        severity_text="INFO",
        attributes={"http.route": "/api/orders/{id}"},
    )
    sent.log_records += 3
    if not lp.force_flush():
        raise RuntimeError("log export did not finish")
    lp.shutdown()

    reader = InMemoryMetricReader()
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    counter = mp.get_meter("pii-e2e").create_counter("checkout.failures")
    counter.add(1, {"customer.contact": p["email"], "client.address": p["client_ip"], "card": p["card"]})
    counter.add(2, {"http.route": "/api/orders/{id}", "note": f"auth {p['aws_key']}"})
    data = reader.get_metrics_data()
    assert data is not None
    result = metric_exp.export(data)  # type: ignore[attr-defined]
    if result.name != "SUCCESS":
        raise RuntimeError(f"metric export failed: {result}")
    mp.shutdown()
    sent.points += 2
    return sent


def raw_trace_request(name: str, trace_id: bytes, span_id: bytes, service: str) -> ExportTraceServiceRequest:
    """A span with PII in its name and attributes and the given (possibly invalid) ids."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    span = rs.scope_spans.add().spans.add()
    span.name = name
    span.trace_id = trace_id
    span.span_id = span_id
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = 1_700_000_000_100_000_000
    span.attributes.add(key="customer.contact").value.string_value = PLANTED["email"]
    span.attributes.add(key="payment.card").value.string_value = PLANTED["card"]
    span.status.code = ProtoStatus.STATUS_CODE_ERROR
    span.status.message = f"failed for {PLANTED['person']} ssn {PLANTED['ssn']}"
    return req


def grpc_export_traces(endpoint: str, body: bytes) -> tuple[grpc.StatusCode, str]:
    """Send raw bytes to the trace service; (status code, details) — OK with "" on success."""
    with grpc.insecure_channel(endpoint) as ch:
        call = ch.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            response = call(body, timeout=10)
        except grpc.RpcError as e:
            return e.code(), e.details() or ""  # type: ignore[attr-defined]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    parsed = ExportTraceServiceResponse.FromString(response)
    return grpc.StatusCode.OK, parsed.partial_success.error_message
