"""End to end: every item errorgate receives is accounted for.

The gateway runs the five default processors and a persistent queue; traffic is mixed (healthy
traces that sampling mostly drops, error traces it keeps, a flood of one error, logs of every
severity, metrics, re-sent duplicates, invalid items) over gRPC and HTTP. After ``stop()`` (which
flushes held traces and drains the queue), per signal:

    received == exported + dropped (all reasons) + dead-lettered

from errorgate's own metrics (the same exposition text /metrics serves, read after ``stop()``
because held traces are only released then), the backend's real item counts equal ``exported``
(plus what it answered as rejected), the dead-letter store holds what was counted as
dead-lettered, and the sum of ``errorgate.sampling.adjusted_count`` over exported spans estimates
the spans sent. A test-only processor in front of the default ones fails on one batch, so the
processor-failure path is counted too. One run has the backend down for the first half of the
traffic and a partial-success answer when it comes back.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span, Status
from prometheus_client import generate_latest

from errorgate import attributes
from errorgate.component import ComponentConfig, ComponentContext, Output, Processor, register_processor
from errorgate.signals import Batch, ExportRequest, Signal, count_items, iter_spans
from tests.support.gateway import gateway_yaml, metric_value, otlp_exporter_yaml, running_gateway, scrape
from tests.support.otlp_sink import OtlpSink

# The default processors, behind a test-only stage that fails on spans named "explode" (a
# stand-in for a processor bug: the batch must be dead-lettered, not lost).
PROCESSORS = "{acct_explode: {}, classify: {}, sample: {}, redact: {}, encrypt: {}, retention: {}}"
PIPELINE = "[acct_explode, classify, sample, redact, encrypt, retention]"
SIGNALS = ("traces", "logs", "metrics")
# 1 - the share of spans the adjusted counts may miss or add. Healthy traces are kept with p=0.1
# (adjusted count 10 each); with ~4,000 healthy spans one standard deviation of the estimate is
# ~5%. Trace ids come from a seeded RNG, so the outcome is deterministic, not flaky.
ADJUSTED_TOLERANCE = 0.12
FLOOD_IN_ORDER = "upstream checkout returned 503"
FLOOD_REVERSED = "payment gateway answered 502"

_PATHS = {
    Signal.TRACES: ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", "/v1/traces"),
    Signal.LOGS: ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", "/v1/logs"),
    Signal.METRICS: ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", "/v1/metrics"),
}


class _ExplodeConfig(ComponentConfig):
    pass


class _Explode(Processor):
    def process(self, batch: Batch) -> Output:
        if batch.signal is Signal.TRACES:
            for _, _, span in iter_spans(batch.request):  # type: ignore[arg-type]
                if span.name == "explode":
                    raise RuntimeError("processor bug")
        return Output.of(batch)


@register_processor("acct_explode", _ExplodeConfig)
def _create_explode(config: _ExplodeConfig, context: ComponentContext) -> Processor:
    return _Explode()


@dataclass
class Traffic:
    requests: list[ExportRequest] = field(default_factory=list)
    valid_spans: int = 0  # unique, valid spans: what the adjusted counts must estimate
    duplicates: Counter[str] = field(default_factory=Counter)  # signal -> items re-sent
    invalid: Counter[str] = field(default_factory=Counter)  # signal -> invalid items
    failing: list[ExportRequest] = field(default_factory=list)  # a processor fails on these


class Client:
    """Sends raw protobuf requests, alternating gRPC and OTLP/HTTP."""

    def __init__(self, grpc_endpoint: str, http_endpoint: str) -> None:
        self.channel = grpc.insecure_channel(grpc_endpoint)
        self.http = http_endpoint
        self.n = 0

    def send(self, request: ExportRequest) -> None:
        signal = Signal.of(request)
        body = request.SerializeToString()
        self.n += 1
        grpc_path, http_path = _PATHS[signal]
        if self.n % 2:
            call = self.channel.unary_unary(grpc_path, request_serializer=None, response_deserializer=None)
            call(body, timeout=10)
        else:
            req = urllib.request.Request(
                f"http://{self.http}{http_path}",
                data=body,
                method="POST",
                headers={"Content-Type": "application/x-protobuf"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200

    def send_failing(self, request: ExportRequest) -> None:
        """A request a processor fails on: the client is told (gRPC INTERNAL), the batch is kept."""
        call = self.channel.unary_unary(_PATHS[Signal.of(request)][0])
        try:
            call(request.SerializeToString(), timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INTERNAL, e  # type: ignore[attr-defined]
        else:
            raise AssertionError("a failing processor was not reported to the client")

    def close(self) -> None:
        self.channel.close()


def _span(
    ss: ScopeSpans,
    trace_id: bytes,
    span_id: int,
    parent: int | None,
    name: str,
    start: int,
    error: str | None = None,
) -> Span:
    span = ss.spans.add()
    span.trace_id = trace_id
    span.span_id = span_id.to_bytes(8, "big")
    if parent is not None:
        span.parent_span_id = parent.to_bytes(8, "big")
    span.name = name
    span.start_time_unix_nano = start
    span.end_time_unix_nano = start + 20_000_000
    span.attributes.add(key="http.route").value.string_value = "/api/orders/{id}"
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = error
    return span


def _trace_request(service: str) -> tuple[ExportTraceServiceRequest, ScopeSpans]:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    return req, rs.scope_spans.add()


def _flood(t: Traffic, rng: random.Random, message: str, n: int, first_id: int, reverse: bool) -> None:
    """``n`` traces failing with one error, 100 ms apart within one minute of telemetry time, sent
    10 per request in time order (or newest request first: batches from several replicas)."""
    minute = 60_000_000_000
    base = (time.time_ns() - 2 * minute) // minute * minute + 5_000_000_000
    chunks = []
    for start in range(0, n, 10):
        req, ss = _trace_request("checkout")
        for i in range(start, min(start + 10, n)):
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            sid = first_id + 3 * i
            at = base + i * 100_000_000
            _span(ss, trace_id, sid, None, "POST /checkout", at)
            _span(ss, trace_id, sid + 1, sid, "charge", at + 1000, error=message)
            _span(ss, trace_id, sid + 2, sid + 1, "HTTP POST", at + 2000)
            t.valid_spans += 3
        chunks.append(req)
    t.requests += reversed(chunks) if reverse else chunks


def build_traffic(
    seed: int, healthy_traces: int, error_traces: int, flood: int, logs: int, points: int
) -> Traffic:
    rng = random.Random(seed)
    t = Traffic()
    base = time.time_ns() - 120_000_000_000
    ids: dict[str, list[bytes]] = {"healthy": [], "error": []}

    def tid() -> bytes:
        return rng.getrandbits(128).to_bytes(16, "big")

    # Healthy two-span traces, 100 traces per request.
    for start in range(0, healthy_traces, 100):
        req, ss = _trace_request("orders")
        for i in range(start, min(start + 100, healthy_traces)):
            trace_id = tid()
            ids["healthy"].append(trace_id)
            _span(ss, trace_id, 2 * i + 1, None, "GET /api/orders/{id}", base + i * 1_000_000)
            _span(ss, trace_id, 2 * i + 2, 2 * i + 1, "SELECT orders", base + i * 1_000_000 + 1000)
            t.valid_spans += 2
        t.requests.append(req)
    # Error traces: a handful of distinct errors (floods are added last, in a controlled order).
    messages = [
        "connection refused to payments:443",
        "deadlock detected while updating order {n}",
        "timeout after 5000ms calling inventory",
        "invalid card number format",
        "NullPointerException in CartService.total",
    ]
    errors = [(messages[i % len(messages)].format(n=i), i) for i in range(error_traces)]
    for chunk in range(0, len(errors), 20):
        req, ss = _trace_request("checkout")
        for message, i in errors[chunk : chunk + 20]:
            trace_id = tid()
            ids["error"].append(trace_id)
            sid = 1_000_000 + 3 * i
            at = base + i * 100_000_000
            _span(ss, trace_id, sid, None, "POST /checkout", at)
            _span(ss, trace_id, sid + 1, sid, "charge", at + 1000, error=message)
            _span(ss, trace_id, sid + 2, sid + 1, "HTTP POST", at + 2000)
            t.valid_spans += 3
        t.requests.append(req)
    # Logs of every severity: ERROR+ on error traces, lower ones on healthy traces or none.
    for start in range(0, logs, 50):
        lreq = ExportLogsServiceRequest()
        rl = lreq.resource_logs.add()
        rl.resource.attributes.add(key="service.name").value.string_value = "orders"
        sl = rl.scope_logs.add()
        for i in range(start, min(start + 50, logs)):
            record = sl.log_records.add()
            severity = 1 + i % 24
            record.severity_number = severity  # type: ignore[assignment]
            record.body.string_value = f"event {i} at stage {i % 7}"
            record.time_unix_nano = base + i * 1_000_000
            if severity >= 17:
                record.trace_id = rng.choice(ids["error"])
            elif i % 3:
                record.trace_id = rng.choice(ids["healthy"])
        t.requests.append(lreq)
    for start in range(0, points, 25):
        mreq = ExportMetricsServiceRequest()
        rm = mreq.resource_metrics.add()
        rm.resource.attributes.add(key="service.name").value.string_value = "orders"
        metric = rm.scope_metrics.add().metrics.add()
        metric.name = "orders.in_flight"
        for i in range(start, min(start + 25, points)):
            p = metric.gauge.data_points.add()
            p.as_int = i
            p.time_unix_nano = base + i * 1_000_000
            p.attributes.add(key="region").value.string_value = f"r{i % 4}"
        t.requests.append(mreq)

    # Invalid items, each request partly valid.
    req, ss = _trace_request("checkout")
    for i in range(7):
        _span(ss, bytes(16), 9_000_000 + i, None, "zero trace id", base)
    good = tid()
    _span(ss, good, 9_100_000, None, "POST /checkout", base, error="invalid card number format")
    t.valid_spans += 1
    t.invalid["traces"] += 7
    t.requests.append(req)
    bad_logs = ExportLogsServiceRequest()
    sl = bad_logs.resource_logs.add().scope_logs.add()
    for i in range(6):
        record = sl.log_records.add(time_unix_nano=base + i, severity_number=9)  # type: ignore[arg-type]
        record.body.string_value = f"short span id {i}"
        record.span_id = b"\x01" * 5 if i < 4 else b""
    t.invalid["logs"] += 4
    t.requests.append(bad_logs)
    bad_metrics = ExportMetricsServiceRequest()
    sm = bad_metrics.resource_metrics.add().scope_metrics.add()
    nameless = sm.metrics.add()
    for i in range(6):
        nameless.gauge.data_points.add(as_int=i, time_unix_nano=base + i)
    t.invalid["metrics"] += 6
    t.requests.append(bad_metrics)

    # Re-sent batches (identical bytes) of every signal.
    for signal in (ExportTraceServiceRequest, ExportLogsServiceRequest, ExportMetricsServiceRequest):
        of_signal = [r for r in t.requests if isinstance(r, signal)]
        for again in of_signal[:2]:
            t.requests.append(again)
            t.duplicates[Signal.of(again).value] += count_items(again)
    rng.shuffle(t.requests)
    req, ss = _trace_request("checkout")
    for i in range(4):
        _span(ss, tid(), 9_200_000 + i, None, "explode" if i == 2 else "GET /api/orders/{id}", base)
    t.failing.append(req)
    if flood:
        _flood(t, rng, FLOOD_IN_ORDER, flood, 5_000_000, reverse=False)
        _flood(t, rng, FLOOD_REVERSED, flood, 6_000_000, reverse=True)
    return t


def _config(tmp_path: Path, sink: OtlpSink) -> str:
    return gateway_yaml(
        tmp_path / "data",
        exporter=otlp_exporter_yaml(sink.grpc_endpoint, queue_dir=tmp_path / "data" / "queue"),
        processors=PROCESSORS,
        pipeline_processors=PIPELINE,
        metrics_processors="[redact]",
    )


def _assert_balanced(metrics: str, sink: OtlpSink, traffic: Traffic) -> None:
    sent = Counter[str]()
    failed = Counter[str]()
    for r in traffic.requests:
        sent[Signal.of(r).value] += count_items(r)
    for r in traffic.failing:
        sent[Signal.of(r).value] += count_items(r)
        failed[Signal.of(r).value] += count_items(r)
    rows = {}
    for signal in SIGNALS:
        rows[signal] = {
            "received": metric_value(metrics, "errorgate_received_items_total", signal=signal),
            "exported": metric_value(metrics, "errorgate_exported_items_total", signal=signal),
            "dropped": metric_value(metrics, "errorgate_dropped_items_total", signal=signal),
            "dead": metric_value(metrics, "errorgate_dead_lettered_items_total", signal=signal),
            "at sink": float(sink.item_count(Signal(signal))),
        }
    for signal, row in rows.items():
        assert row["received"] == sent[signal], (signal, row)
        assert row["received"] == row["exported"] + row["dropped"] + row["dead"], (signal, row)
        # The backend keeps what it reports as rejected out of its store; our sink records it anyway.
        rejected = metric_value(
            metrics, "errorgate_dropped_items_total", signal=signal, reason="rejected_by_backend"
        )
        assert row["at sink"] == row["exported"] + rejected, (signal, row)
        assert (
            metric_value(metrics, "errorgate_dropped_items_total", signal=signal, reason="duplicate")
            == (traffic.duplicates[signal])
        )
        assert (
            metric_value(metrics, "errorgate_dead_lettered_items_total", signal=signal, reason="invalid_item")
            == traffic.invalid[signal]
        )
        assert (
            metric_value(
                metrics, "errorgate_dead_lettered_items_total", signal=signal, reason="processor_error"
            )
            == failed[signal]
        )
    # Nothing else drops or dead-letters: sampling, duplicates and backend rejections only.
    for signal in SIGNALS:
        explained = sum(
            metric_value(metrics, "errorgate_dropped_items_total", signal=signal, reason=reason)
            for reason in ("sampled", "duplicate", "rejected_by_backend")
        )
        assert rows[signal]["dropped"] == explained, (signal, rows[signal])
        assert rows[signal]["dead"] == traffic.invalid[signal] + failed[signal], (signal, rows[signal])
    assert metric_value(metrics, "errorgate_dropped_items_total", signal="traces", reason="sampled") > 0
    assert metric_value(metrics, "errorgate_dropped_items_total", signal="logs", reason="sampled") > 0


def _adjusted(span: Span) -> float:
    value = attributes.to_dict(span.attributes).get("errorgate.sampling.adjusted_count")
    assert isinstance(value, float), f"exported span {span.name} has no adjusted count"
    return value


def _adjusted_sum(sink: OtlpSink) -> float:
    return sum(_adjusted(span) for span in sink.spans())


@dataclass
class Run:
    traffic: Traffic
    sink: OtlpSink
    metrics: str
    dead_letters: Counter[str]  # signal -> items in the dead-letter store


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One gateway, all the mixed traffic, then ``stop()``: it flushes held traces and drains the queue."""
    traffic = build_traffic(seed=7, healthy_traces=2000, error_traces=30, flood=40, logs=600, points=300)
    with OtlpSink() as sink, running_gateway(_config(tmp_path_factory.mktemp("accounting"), sink)) as gw:
        client = Client(gw.grpc_endpoint, gw.http_endpoint)
        for request in traffic.requests:
            client.send(request)
        for request in traffic.failing:
            client.send_failing(request)
        client.close()
    # After stop() the counters are final (the /metrics endpoint is gone with the gateway).
    stored = Counter[str]()
    for entry in gw.dlq.list():
        stored[entry.signal.value] += entry.items
    return Run(traffic, sink, generate_latest(gw.telemetry.registry).decode(), stored)


def test_counts_balance_per_signal(busy: Run) -> None:
    _assert_balanced(busy.metrics, busy.sink, busy.traffic)


def test_dead_lettered_items_are_in_the_store(busy: Run) -> None:
    for signal in SIGNALS:
        counted = metric_value(busy.metrics, "errorgate_dead_lettered_items_total", signal=signal)
        assert busy.dead_letters[signal] == counted > 0, signal


def test_adjusted_counts_estimate_the_spans_sent(busy: Run) -> None:
    estimate = _adjusted_sum(busy.sink)
    sent = busy.traffic.valid_spans
    assert busy.sink.item_count(Signal.TRACES) < sent / 3, "sampling dropped healthy traces"
    assert abs(estimate - sent) <= ADJUSTED_TOLERANCE * sent, (estimate, sent)
    # What errorgate reports as the estimate is what the backend can add up itself.
    assert metric_value(busy.metrics, "errorgate_sampling_adjusted_items_total", signal="traces") == estimate


def _flood_spans(run: Run, message: str) -> tuple[int, float]:
    """(kept error traces, their summed adjusted counts) for one flooding error."""
    spans = [
        s
        for s in run.sink.spans()
        if s.status.code == Status.STATUS_CODE_ERROR and s.status.message == message
    ]
    adjusted = sum(_adjusted(s) for s in spans)
    return len(spans), adjusted


def test_distinct_errors_are_kept_and_a_flood_is_thinned(busy: Run) -> None:
    dropped = metric_value(
        busy.metrics, "errorgate_sampled_items_total", signal="traces", decision="dropped", reason="flood"
    )
    assert dropped > 0
    kept, adjusted = _flood_spans(busy, FLOOD_IN_ORDER)
    # 10 per minute, then 1 per second of telemetry time: the 4 s flood keeps 10 + 3.
    assert kept == 13, kept
    distinct = [
        s
        for s in busy.sink.spans()
        if s.status.code == Status.STATUS_CODE_ERROR
        and s.status.message not in (FLOOD_IN_ORDER, FLOOD_REVERSED)
    ]
    assert len(distinct) == 30 + 1  # + the valid span of the partly invalid request
    # Drops are carried onto the next kept trace; only those after the last kept one (less than
    # one refill interval: 1 s = 10 traces) are not counted anywhere.
    assert 40 - 10 <= adjusted <= 40, adjusted


def test_flood_arriving_out_of_order_is_still_counted(busy: Run) -> None:
    _, adjusted = _flood_spans(busy, FLOOD_REVERSED)
    assert 40 - 10 <= adjusted <= 40, adjusted


def test_counts_balance_when_the_backend_is_down_for_a_while(tmp_path: Path) -> None:
    traffic = build_traffic(seed=11, healthy_traces=400, error_traces=15, flood=0, logs=200, points=100)
    half = len(traffic.requests) // 2
    with OtlpSink() as sink:
        with running_gateway(_config(tmp_path, sink)) as gw:
            sink.stop()
            client = Client(gw.grpc_endpoint, gw.http_endpoint)
            for request in traffic.requests[:half]:
                client.send(request)
            deadline = time.monotonic() + 15
            # Until an export attempt has failed, the backend being down went unnoticed.
            while not metric_value(
                scrape(gw.metrics_endpoint), "errorgate_export_attempts_total", outcome="retryable"
            ):
                assert time.monotonic() < deadline, "no failed export attempt while the backend was down"
                time.sleep(0.1)
            assert metric_value(scrape(gw.metrics_endpoint), "errorgate_queue_items") > 0
            during = scrape(gw.metrics_endpoint)
            sink.reject_next(1, rejected=1)  # the first answer after the outage is a partial success
            sink.start()
            for request in traffic.requests[half:]:
                client.send(request)
            for request in traffic.failing:
                client.send_failing(request)
            client.close()
        metrics = generate_latest(gw.telemetry.registry).decode()
        _assert_balanced(metrics, sink, traffic)
    assert metric_value(during, "errorgate_exported_items_total") < metric_value(
        metrics, "errorgate_exported_items_total"
    )
    assert metric_value(metrics, "errorgate_export_attempts_total", outcome="retryable") > 0
    assert metric_value(metrics, "errorgate_dropped_items_total", reason="rejected_by_backend") == 1
