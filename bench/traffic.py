"""Realistic mixed OTLP traffic for the benchmark: traces from a few services (HTTP server,
DB client and RPC spans, some errors with exception events), logs (info and error lines,
some with PII to redact), and metrics. Requests are built once as templates; each sent
request gets a fresh trace id by patching bytes, so no two requests are identical
(errorgate's duplicate detection must not make the gateway look faster than it is)."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MARKER = b"\xfe\xed\xfa\xce\xca\xfe\xbe\xef"  # first half of every template trace id
# Placeholder reference word at the end of log bodies with ``unique_bodies``: quoted lowercase
# letters, which no recognizer takes for PII (digits could read as a phone or card number) and
# classify's template replaces (<str>), so errors still group as with ids in real messages.
BODY_MARKER = b"ref 'qqqqqqqqqq'"
_BODY_WORD = 10
# Lowercase words (no recognizer, no name for NER) that pad a unique body to ``body_chars``.
_FILLER = "while the queue worker retried the export of the batch "
SERVICES = ["frontend", "checkout", "payments", "catalog", "orders-db-proxy"]
FIXED_NOW_NS = 1_764_000_000_000_000_000
_MASK64 = (1 << 64) - 1


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


@dataclass
class Template:
    signal: str  # "traces" | "logs" | "metrics"
    path: str  # gRPC method
    payload: bytes
    items: int
    patch_offsets: list[int]
    # Where each log body's reference word starts (``unique_bodies`` only): patched per request,
    # so every log record's body is a value never seen before, as ids in real messages make it.
    body_offsets: list[int] = field(default_factory=list)


def _trace_request(
    rng: random.Random, n_traces: int, spans_per_trace: int, now: int
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for t in range(n_traces):
        service = SERVICES[t % len(SERVICES)]
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [kv("service.name", service), kv("service.version", "1.4.2"), kv("host.name", f"node-{t % 7}")]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        trace_id = MARKER + struct.pack(">Q", rng.getrandbits(64))
        failing = rng.random() < 0.1
        for s in range(spans_per_trace):
            span = ss.spans.add()
            span.trace_id = trace_id
            span.span_id = rng.getrandbits(64).to_bytes(8, "big")
            span.start_time_unix_nano = now + s * 1000
            span.end_time_unix_nano = now + s * 1000 + rng.randint(100_000, 50_000_000)
            if s == 0:
                span.kind = Span.SPAN_KIND_SERVER
                span.name = "GET /api/orders/{id}"
                span.attributes.extend(
                    [
                        kv("http.request.method", "GET"),
                        kv("http.route", "/api/orders/{id}"),
                        kv("url.path", f"/api/orders/{rng.randint(1000, 99999)}"),
                        kv("http.response.status_code", 500 if failing else 200),
                        kv("client.address", f"203.0.113.{rng.randint(1, 254)}"),
                        kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                    ]
                )
            elif s % 2:
                span.kind = Span.SPAN_KIND_CLIENT
                span.name = "SELECT orders"
                span.attributes.extend(
                    [
                        kv("db.system", "postgresql"),
                        kv("db.query.text", "SELECT * FROM orders WHERE id = $1"),
                        kv("server.address", "orders-db.internal"),
                        kv("server.port", 5432),
                    ]
                )
            else:
                span.kind = Span.SPAN_KIND_INTERNAL
                span.name = "render order"
                span.attributes.extend([kv("app.order.items", rng.randint(1, 9))])
            if failing and s == spans_per_trace - 1:
                span.status.code = Status.STATUS_CODE_ERROR
                span.status.message = (
                    f"timeout after {rng.randint(1000, 5000)}ms connecting to orders-db.internal:5432"
                )
                ev = span.events.add()
                ev.name = "exception"
                ev.time_unix_nano = span.end_time_unix_nano
                ev.attributes.extend(
                    [
                        kv("exception.type", "psycopg.errors.ConnectionTimeout"),
                        kv("exception.message", "connection timeout expired"),
                    ]
                )
            if s:
                span.parent_span_id = ss.spans[0].span_id
    return req


def _logs_request(
    rng: random.Random, n: int, now: int, unique_bodies: bool = False, body_chars: int = 0
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", "checkout"), kv("service.version", "2.0.1")])
    sl = rl.scope_logs.add()
    sl.scope.name = "bench"
    for i in range(n):
        rec = sl.log_records.add()
        rec.time_unix_nano = now + i
        rec.trace_id = MARKER + struct.pack(">Q", rng.getrandbits(64))
        rec.span_id = rng.getrandbits(64).to_bytes(8, "big")
        if i % 10 == 0:
            rec.severity_number = SeverityNumber.SEVERITY_NUMBER_ERROR
            rec.severity_text = "ERROR"
            rec.body.string_value = (
                f"payment declined for order {rng.randint(10000, 99999)}: card issuer timeout"
            )
        elif i % 10 == 1:
            rec.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
            rec.body.string_value = f"receipt sent to customer{rng.randint(1, 999)}@example.com"
        else:
            rec.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
            rec.body.string_value = f"order {rng.randint(10000, 99999)} processed in {rng.randint(5, 900)}ms"
        if unique_bodies:
            body = rec.body.string_value
            pad = max(0, body_chars - len(body) - len(BODY_MARKER) - 1)
            rec.body.string_value = (
                body + (" " + _FILLER * (pad // len(_FILLER) + 1))[:pad] + " " + BODY_MARKER.decode()
            )
        rec.attributes.extend([kv("code.function", "process_order"), kv("order.items", rng.randint(1, 9))])
    return req


def _metrics_request(rng: random.Random, n: int, now: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "frontend")])
    sm = rm.scope_metrics.add()
    m = sm.metrics.add()
    m.name = "http.server.request.duration"
    m.unit = "s"
    for i in range(n):
        dp = m.histogram.data_points.add()
        dp.time_unix_nano = now + i
        dp.count = 10
        dp.sum = 1.5
        dp.bucket_counts.extend([1, 2, 3, 4])
        dp.explicit_bounds.extend([0.1, 0.5, 1.0])
        dp.attributes.extend([kv("http.route", f"/api/r{i % 5}"), kv("http.response.status_code", 200)])
        if i == 0:  # an exemplar carries a trace id, which makes each sent request unique
            ex = dp.exemplars.add()
            ex.time_unix_nano = dp.time_unix_nano
            ex.as_double = 0.2
            ex.trace_id = MARKER + struct.pack(">Q", rng.getrandbits(64))
            ex.span_id = rng.getrandbits(64).to_bytes(8, "big")
    return req


def _template(signal: str, path: str, request: object, items: int) -> Template:
    payload = request.SerializeToString()  # type: ignore[attr-defined]
    offsets = []
    start = 0
    while (i := payload.find(MARKER, start)) >= 0:
        offsets.append(i + len(MARKER))
        start = i + 1
    bodies = []
    start = 0
    while (i := payload.find(BODY_MARKER, start)) >= 0:
        bodies.append(i + 5)
        start = i + 1
    return Template(signal, path, payload, items, offsets, bodies)


def build_templates(
    seed: int = 7, now_ns: int = FIXED_NOW_NS, unique_bodies: bool = False, body_chars: int = 0
) -> list[Template]:
    """The traffic mix: ~70% of items are spans, 25% logs, 5% metric points, timed at ``now_ns``
    (the load generator rebuilds them every second with the wall clock, so telemetry time
    moves as in real traffic; in-process benchmarks keep a fixed instant and simulate time).
    ``unique_bodies``: each log body ends in a reference word that ``patched`` makes unique,
    after lowercase filler words that make it ``body_chars`` long (0: no filler)."""
    rng = random.Random(seed)
    out = []
    for _ in range(6):
        out.append(
            _template(
                "traces",
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                _trace_request(rng, 10, 5, now_ns),
                50,
            )
        )
    for _ in range(2):
        out.append(
            _template(
                "logs",
                "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                _logs_request(rng, 30, now_ns, unique_bodies, body_chars),
                30,
            )
        )
    out.append(
        _template(
            "metrics",
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            _metrics_request(rng, 20, now_ns),
            20,
        )
    )
    return out


def patched(template: Template, counter: int) -> bytes:
    """The template with its trace ids' second half replaced: unique bytes per request. Spans
    that shared a trace id in the template still share one (5-span traces stay 5-span traces).
    The new half is a bijective mix of (counter, trace number), so ids stay unique and their low
    56 bits are as random as real W3C trace ids (sampling reads its randomness there)."""
    if not template.patch_offsets and not template.body_offsets:
        return template.payload
    buf = bytearray(template.payload)
    ids: dict[bytes, int] = {}
    for off in template.patch_offsets:
        n = ids.setdefault(template.payload[off : off + 8], len(ids))
        buf[off : off + 8] = struct.pack(">Q", _mix64((counter << 12) | n))
    for n, off in enumerate(template.body_offsets):
        buf[off : off + _BODY_WORD] = _letters(_mix64((counter << 12) | n | 1 << 11))
    return bytes(buf)


def _letters(x: int) -> bytes:
    """``_BODY_WORD`` lowercase letters spelling ``x`` (base 26, low digits first)."""
    out = bytearray()
    for _ in range(_BODY_WORD):
        x, r = divmod(x, 26)
        out.append(97 + r)
    return bytes(out)


def _mix64(x: int) -> int:
    """splitmix64's finalizer: a bijection on 64-bit integers that spreads every input bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)
