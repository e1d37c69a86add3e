"""QueuedExporter: retries, server delay hints, dead-lettering, circuit breaker, outage recovery."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from errorgate.component import ComponentContext, Exporter, ExportResult
from errorgate.config import CircuitBreakerConfig, ConfigError, RetryConfig, parse_config
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.delivery.exporter import QueuedExporter
from errorgate.delivery.policy import Backoff, CircuitBreaker, CircuitState
from errorgate.delivery.queue import QueueInUse
from errorgate.errors import Backpressure
from errorgate.exporters.otlp import OtlpExporter, OtlpExporterConfig
from errorgate.signals import Batch, Signal, count_items
from errorgate.telemetry import Telemetry
from tests.support.otlp_sink import OtlpSink, log_request, trace_request


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


class Harness:
    def __init__(self, tmp_path: Path, sink: OtlpSink, protocol: str = "grpc", **settings: object) -> None:
        self.telemetry = Telemetry()
        self.dlq = DeadLetterStore(tmp_path / "dlq", self.telemetry)
        endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_url
        self.config = OtlpExporterConfig.model_validate(
            {
                "endpoint": endpoint,
                "protocol": protocol,
                "tls": {"insecure": True},
                "timeout": "2s",
                **settings,
            }
        )
        self.context = ComponentContext("otlp", tmp_path, self.telemetry, logging.getLogger("test"))
        self.queue_dir: Path | None = None
        self.qe = self.build()

    def build(self) -> QueuedExporter:
        qe = QueuedExporter(
            "otlp", OtlpExporter(self.config, self.context), self.config, self.context, self.dlq
        )
        qe.start()
        return qe

    def metric(self, name: str, **labels: str) -> float:
        return self.telemetry.registry.get_sample_value(name, labels) or 0.0


def _wait(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ---------------------------------------------------------------- backoff & breaker (pure)


def test_backoff_full_jitter_window_grows_to_max() -> None:
    b = Backoff(RetryConfig(initial_interval=1, max_interval=4, multiplier=2))
    assert [b.window(n) for n in (1, 2, 3, 4, 9)] == [1, 2, 4, 4, 4]
    for attempt in (1, 2, 3, 6):
        samples = [b.delay(attempt) for _ in range(400)]
        assert all(0 <= s <= b.window(attempt) for s in samples)
        # Full jitter: the whole window is used, not just its top.
        assert min(samples) < 0.2 * b.window(attempt) and max(samples) > 0.8 * b.window(attempt)
    assert b.delay(5, retry_after=0.25) == 0.25
    seeded = Backoff(RetryConfig(initial_interval=1, max_interval=4, multiplier=2), rng=random.Random(7))
    assert 0 <= seeded.delay(2) <= 2


def test_circuit_breaker_transitions() -> None:
    now = [100.0]
    changes: list[CircuitState] = []
    cb = CircuitBreaker(
        CircuitBreakerConfig(failure_threshold=3, open_duration=10),
        on_change=changes.append,
        clock=lambda: now[0],
    )
    for _ in range(2):
        assert cb.acquire() == 0
        cb.failure()
    cb.success()  # a success resets the consecutive count
    for _ in range(3):
        assert cb.acquire() == 0
        cb.failure()
    assert cb.state is CircuitState.OPEN and cb.acquire() == pytest.approx(10)
    now[0] += 10
    assert cb.acquire() == 0  # the probe
    assert cb.state is CircuitState.HALF_OPEN and cb.acquire() > 0  # only one probe at a time
    cb.failure()
    assert cb.state is CircuitState.OPEN
    now[0] += 10
    assert cb.acquire() == 0
    cb.success()
    assert cb.state is CircuitState.CLOSED and cb.acquire() == 0
    assert changes == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


# ---------------------------------------------------------------- against the sink


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_server_delay_hint_is_honoured(tmp_path: Path, sink: OtlpSink, protocol: str) -> None:
    # initial_interval is long: only the server's hint can make the retry come this soon.
    h = Harness(tmp_path, sink, protocol, retry_on_failure={"initial_interval": "60s", "max_interval": "60s"})
    sink.fail_next(2, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503, retry_after=0.2)
    h.qe.enqueue(Batch.of(trace_request(4)))
    assert h.qe.drain(10)
    h.qe.shutdown()
    assert [d for _r, d in h.qe.retry_log] == [0.2, 0.2]
    assert sum(sink.calls.values()) == 3 and sum(sink.failed_calls.values()) == 2
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(4)]
    assert h.metric("errorgate_export_attempts_total", exporter="otlp", outcome="retryable") == 2
    assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 4


def test_resource_exhausted_with_retry_info_is_retried(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(tmp_path, sink)
    sink.fail_next(1, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.1)
    h.qe.enqueue(Batch.of(trace_request(2)))
    assert h.qe.drain(10)
    h.qe.shutdown()
    assert list(h.qe.retry_log) == [("RESOURCE_EXHAUSTED", 0.1)]
    assert len(sink.spans()) == 2 and h.dlq.list() == []


def test_permanent_error_dead_letters_with_reason(tmp_path: Path, sink: OtlpSink) -> None:
    # Batching off: the refusal must meet exactly the first batch (combined requests that are
    # refused are retried batch by batch: see the batching tests).
    h = Harness(tmp_path, sink, sending_queue={"num_consumers": 1, "batch": {"enabled": False}})
    sink.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
    sent = log_request(7)
    h.qe.enqueue(Batch.of(sent))
    h.qe.enqueue(Batch.of(log_request(3, start=7)))
    assert h.qe.drain(10)
    h.qe.shutdown()
    [entry] = h.dlq.list()
    assert (entry.reason, entry.detail, entry.source, entry.items, entry.signal) == (
        "permanent_export_error",
        "INVALID_ARGUMENT",
        "exporter:otlp",
        7,
        Signal.LOGS,
    )
    assert h.dlq.load(entry.id) == (Signal.LOGS, sent)
    assert len(sink.log_records()) == 3  # the next batch went through
    assert (
        h.metric("errorgate_dead_lettered_items_total", signal="logs", reason="permanent_export_error") == 7
    )
    assert h.metric("errorgate_exported_items_total", signal="logs", exporter="otlp") == 3
    assert h.qe.breaker.state is CircuitState.CLOSED


def test_max_elapsed_time_dead_letters(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(
        tmp_path,
        sink,
        retry_on_failure={"initial_interval": "50ms", "max_interval": "100ms", "max_elapsed_time": "400ms"},
        circuit_breaker={"enabled": False},
    )
    sink.fail_next(1000)
    h.qe.enqueue(Batch.of(trace_request(5)))
    assert h.qe.drain(10)
    h.qe.shutdown()
    [entry] = h.dlq.list()
    assert entry.reason == "max_elapsed_time" and entry.items == 5 and "UNAVAILABLE" in entry.detail
    assert sink.requests == [] and sink.failed_calls["grpc"] >= 2


def test_partial_success_counts_balance(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(tmp_path, sink)
    sink.reject_next(1, rejected=3)
    h.qe.enqueue(Batch.of(trace_request(10)))
    assert h.qe.drain(10)
    h.qe.shutdown()
    assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 7
    assert h.metric("errorgate_dropped_items_total", signal="traces", reason="rejected_by_backend") == 3


def test_circuit_opens_half_opens_and_closes(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(
        tmp_path,
        sink,
        retry_on_failure={"initial_interval": "10ms", "max_interval": "20ms"},
        circuit_breaker={"failure_threshold": 3, "open_duration": "300ms"},
        sending_queue={"num_consumers": 1},
    )
    sink.stop()
    h.qe.enqueue(Batch.of(trace_request(3)))
    assert _wait(lambda: h.qe.state()["circuit"] == "open")
    assert h.metric("errorgate_exporter_circuit_state", exporter="otlp") == 2
    state = h.qe.state()
    assert state["queue_items"] == 3 and state["accepting"] is True
    h.qe.enqueue(Batch.of(trace_request(2, start=3)))  # an open circuit still queues
    assert _wait(lambda: CircuitState.HALF_OPEN in h.qe.breaker.transitions)
    sink.start()
    assert h.qe.drain(15)
    assert h.qe.state() == {"circuit": "closed", "queue_items": 0, "queue_bytes": 0, "accepting": True}
    assert h.metric("errorgate_exporter_circuit_state", exporter="otlp") == 0
    h.qe.shutdown()
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(5)]
    transitions = h.qe.breaker.transitions
    assert transitions[0] is CircuitState.OPEN and transitions[-1] is CircuitState.CLOSED
    # While open no attempts are made: with 10-20 ms backoff and no breaker there would be dozens.
    failed = h.metric("errorgate_export_attempts_total", exporter="otlp", outcome="retryable")
    opened = transitions.count(CircuitState.OPEN)
    assert failed == 3 + (opened - 1)  # the threshold, then one failed probe per re-open


def test_http_outage_nothing_accepted_while_down_everything_after(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(
        tmp_path,
        sink,
        "http/protobuf",
        retry_on_failure={"initial_interval": "20ms", "max_interval": "50ms"},
        sending_queue={"num_consumers": 1},
    )
    h.qe.enqueue(Batch.of(trace_request(1)))
    assert h.qe.drain(10)  # a keep-alive connection is now open
    sink.stop()
    for i in range(1, 4):
        h.qe.enqueue(Batch.of(trace_request(10, start=(i - 1) * 10 + 1)))
    assert _wait(
        lambda: h.metric("errorgate_export_attempts_total", exporter="otlp", outcome="retryable") >= 2
    )
    assert sink.item_count() == 1
    sink.start()
    assert h.qe.drain(15)
    h.qe.shutdown()
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(31)]


def test_full_queue_backpressure_never_drops(tmp_path: Path, sink: OtlpSink) -> None:
    one = trace_request(20)
    batches = [trace_request(20, start=i * 20) for i in range(3)]
    capacity = sum(b.ByteSize() + 13 for b in batches)
    h = Harness(tmp_path, sink, sending_queue={"max_size_mib": capacity / 1048576})
    sink.stop()
    for b in batches:
        h.qe.enqueue(Batch.of(b))
    assert not h.qe.has_room(one.ByteSize())
    assert h.qe.state()["accepting"] is False
    with pytest.raises(Backpressure):
        h.qe.enqueue(Batch.of(one))
    sink.start()
    assert h.qe.drain(15)
    h.qe.shutdown()
    assert len(sink.spans()) == 60


class _Flaky(Exporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, batch: Batch, timeout: float) -> ExportResult:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("bug")
        return ExportResult.ok()


def test_exporter_exception_is_retried_not_lost(tmp_path: Path) -> None:
    telemetry = Telemetry()
    ctx = ComponentContext("debug", tmp_path, telemetry, logging.getLogger("test"))
    config = OtlpExporterConfig(endpoint="x:1", retry_on_failure=RetryConfig(initial_interval=0.01))
    flaky = _Flaky()
    qe = QueuedExporter("debug", flaky, config, ctx, DeadLetterStore(tmp_path / "dlq", telemetry))
    qe.start()
    qe.enqueue(Batch.of(trace_request(2)))
    assert qe.drain(5)
    qe.shutdown()
    assert flaky.calls == 2
    assert (
        telemetry.registry.get_sample_value(
            "errorgate_exported_items_total", {"signal": "traces", "exporter": "debug"}
        )
        == 2
    )


@pytest.mark.parametrize("consumers", [1, 4])
def test_outage_every_item_arrives_once_and_counts_balance(
    tmp_path: Path, sink: OtlpSink, consumers: int
) -> None:
    h = Harness(
        tmp_path,
        sink,
        retry_on_failure={"initial_interval": "20ms", "max_interval": "200ms"},
        circuit_breaker={"failure_threshold": 5, "open_duration": "200ms"},
        sending_queue={"storage": str(tmp_path / "queue"), "num_consumers": consumers},
    )
    sink.stop()
    per_batch, batches = 100, 120
    for b in range(batches):
        h.qe.enqueue(Batch.of(trace_request(per_batch, start=b * per_batch)))
    # Half-way through the outage the gateway restarts: the persistent queue carries the rest over.
    h.qe.shutdown()
    assert h.qe.state()["queue_items"] == per_batch * batches
    h.qe = h.build()
    assert h.qe.state()["queue_items"] == per_batch * batches
    sink.start()
    assert h.qe.drain(60)
    h.qe.shutdown()
    names = [s.name for s in sink.spans()]
    total = per_batch * batches
    assert len(names) == total and set(names) == {f"op-{i}" for i in range(total)}
    if consumers == 1:
        assert names == [f"op-{i}" for i in range(total)]  # one consumer: strict order
    exported = h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp")
    assert exported == total and h.dlq.list() == []


def test_exporters_sharing_a_storage_directory_get_their_own_queues(tmp_path: Path, sink: OtlpSink) -> None:
    storage = str(tmp_path / "queue")
    a = Harness(tmp_path, sink, sending_queue={"storage": storage})
    other = QueuedExporter("otlp/backup", OtlpExporter(a.config, a.context), a.config, a.context, a.dlq)
    other.start()
    # The same exporter id twice would interleave one queue's records: refused with the key named.
    with pytest.raises(QueueInUse, match=r"sending_queue\.storage"):
        QueuedExporter("otlp", OtlpExporter(a.config, a.context), a.config, a.context, a.dlq)
    a.qe.enqueue(Batch.of(trace_request(2)))
    other.enqueue(Batch.of(trace_request(3, start=2)))
    assert a.qe.drain(10) and other.drain(10)
    a.qe.shutdown()
    other.shutdown()
    assert sorted(p.name for p in Path(storage).iterdir()) == ["otlp", "otlp_backup"]
    assert sorted(s.name for s in sink.spans()) == [f"op-{i}" for i in range(5)]


# ---------------------------------------------------------------- batching (sending_queue.batch)


def _queued_then_started(h: Harness, batches: list[Batch]) -> None:
    """Enqueue ``batches`` before any consumer runs, so how they are grouped does not depend on timing."""
    h.qe.shutdown()
    h.qe = QueuedExporter(
        "otlp", OtlpExporter(h.config, h.context), h.config, h.context, h.dlq, queue_dir=h.queue_dir
    )
    for b in batches:
        h.qe.enqueue(b)
    h.qe.start()
    assert h.qe.drain(20)
    h.qe.shutdown()


def _interleaved(n: int) -> list[Batch]:
    out = []
    for i in range(n):
        out.append(Batch.of(trace_request(10, start=i * 10)))
        if i % 3 == 0:
            out.append(Batch.of(log_request(5, start=i * 5)))
    return out


@pytest.mark.parametrize("persistent", [True, False])
def test_batching_sends_one_request_per_signal_in_queue_order(
    tmp_path: Path, sink: OtlpSink, persistent: bool
) -> None:
    h = Harness(tmp_path, sink, sending_queue={"num_consumers": 1, "batch": {"flush_timeout": "2s"}})
    h.queue_dir = tmp_path / "queue" if persistent else None
    _queued_then_started(h, _interleaved(30))
    # 30 trace batches and 10 log batches went out as one request per signal, items in queue order.
    assert [r.signal for r in sink] == [Signal.TRACES, Signal.LOGS]
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(300)]
    assert [r.body.string_value for r in sink.log_records()] == [
        f"line-{i * 5 + j}" for i in range(0, 30, 3) for j in range(5)
    ]
    assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 300
    assert h.metric("errorgate_exported_items_total", signal="logs", exporter="otlp") == 50


def test_batching_flushes_at_min_size_and_never_exceeds_max_size(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(
        tmp_path,
        sink,
        sending_queue={"num_consumers": 1, "batch": {"flush_timeout": "5s", "min_size": 40, "max_size": 45}},
    )
    h.queue_dir = None
    _queued_then_started(h, [Batch.of(trace_request(10, start=i * 10)) for i in range(10)])
    # min_size reached after 4 batches of 10 (a 5th would pass max_size): 40 + 40 + the 20 left,
    # which waited out flush_timeout for more.
    assert [count_items(r.request) for r in sink] == [40, 40, 20]
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(100)]


def test_batching_disabled_sends_each_batch_as_it_came(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(tmp_path, sink, sending_queue={"num_consumers": 1, "batch": {"enabled": False}})
    h.queue_dir = None
    _queued_then_started(h, [Batch.of(trace_request(10, start=i * 10)) for i in range(5)])
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(50)]
    assert len(sink.requests) == 5  # a backlog under MERGE_MIN_BACKLOG is not merged


def test_a_refused_combined_request_is_retried_batch_by_batch(tmp_path: Path, sink: OtlpSink) -> None:
    h = Harness(tmp_path, sink, sending_queue={"num_consumers": 1, "batch": {"flush_timeout": "2s"}})
    h.queue_dir = tmp_path / "queue"
    # The backend refuses the combined request as invalid: that says nothing about which batch
    # was at fault, so each is sent on its own and only a batch refused alone is dead-lettered.
    sink.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, 400, message="bad request")
    _queued_then_started(h, [Batch.of(trace_request(10, start=i * 10)) for i in range(6)])
    assert [s.name for s in sink.spans()] == [f"op-{i}" for i in range(60)]
    assert [len(r.request.resource_spans) for r in sink] == [1] * 6
    assert h.dlq.list() == []
    assert h.metric("errorgate_exported_items_total", signal="traces", exporter="otlp") == 60


def test_batch_min_size_above_max_size_is_a_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"sending_queue\.batch.*min_size \(500\) must not exceed max_size \(100\)"
    ):
        parse_config(
            """
receivers: {otlp: {protocols: {grpc: {}}}}
exporters:
  otlp: {endpoint: 127.0.0.1:4317, sending_queue: {batch: {min_size: 500, max_size: 100}}}
service:
  pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}
"""
        )
