"""breaker: opens on failure rate and on slow-call rate, rejects with a dependency span, half-open
probes decide recovery, fallback answers while open; state changes as span events and metrics.
bulkhead: a concurrency limit that rejects the overflow."""

from __future__ import annotations

import threading

import pytest
from errorgate_kit.breaker import CircuitBreaker, CircuitBreakerOpen, State
from errorgate_kit.bulkhead import Bulkhead, BulkheadPoolExhausted
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def boom() -> None:
    raise ConnectionError("payments down")


def fail(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            breaker.call(boom)


def test_opens_on_failure_rate_rejects_then_recovers_through_probes(spans, metric_reader) -> None:
    clock = Clock()
    b = CircuitBreaker("payments", window_size=10, minimum_calls=4, failure_rate_threshold=0.5,
                       open_duration=5, half_open_probes=2, clock=clock)  # fmt: skip
    with trace.get_tracer("t").start_as_current_span("checkout"):
        b.call(lambda: 1)
        b.call(lambda: 1)
        fail(b, 1)
        assert b.state is State.CLOSED  # 1 of 3: below minimum calls
        fail(b, 1)  # 2 of 4 = 50 %
        assert b.state is State.OPEN
        calls = []
        with pytest.raises(CircuitBreakerOpen):
            b.call(lambda: calls.append(1))
        assert calls == []  # rejected without touching the dependency
        clock.now = 5
        assert b.state is State.HALF_OPEN
        b.call(lambda: 1)
        b.call(lambda: 1)
        assert b.state is State.CLOSED
    events = [e for e in spans.named("checkout")[0].events if e.name == "circuit_breaker.state_change"]
    assert [(e.attributes["circuit_breaker.state.from"], e.attributes["circuit_breaker.state.to"]) for e in events] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]  # fmt: skip
    rejected = spans.named("circuit_breaker payments")[0]
    assert rejected.kind is SpanKind.CLIENT and rejected.status.status_code is StatusCode.ERROR
    assert rejected.attributes["peer.service"] == "payments"
    assert rejected.events[0].attributes["exception.type"].endswith("CircuitBreakerOpen")
    data = metric_reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"circuit_breaker.transitions", "circuit_breaker.state"} <= names


def test_failed_probe_reopens(spans) -> None:
    clock = Clock()
    b = CircuitBreaker("p", window_size=4, minimum_calls=2, open_duration=1, half_open_probes=1, clock=clock)
    fail(b, 2)
    clock.now = 1
    fail(b, 1)
    assert b.state is State.OPEN


def test_half_open_admits_only_the_probes(spans) -> None:
    clock = Clock()
    b = CircuitBreaker("p", window_size=4, minimum_calls=2, open_duration=1, half_open_probes=1, clock=clock)
    fail(b, 2)
    clock.now = 1
    gate = threading.Event()
    started = threading.Event()

    def slow_probe() -> int:
        started.set()
        gate.wait(5)
        return 1

    t = threading.Thread(target=b.call, args=(slow_probe,))
    t.start()
    started.wait(5)
    with pytest.raises(CircuitBreakerOpen):
        b.call(lambda: 1)  # the one probe is out
    gate.set()
    t.join()
    assert b.state is State.CLOSED


def test_opens_on_slow_calls_even_when_they_succeed(spans) -> None:
    clock = Clock()
    b = CircuitBreaker("search", window_size=4, minimum_calls=4, slow_call_duration=1.0,
                       slow_call_rate_threshold=0.5, clock=clock)  # fmt: skip

    def slow() -> int:
        clock.now += 2
        return 1

    for _ in range(2):
        b.call(lambda: 1)
        b.call(slow)
    assert b.state is State.OPEN


def test_fallback_answers_while_open_and_on_failure(spans) -> None:
    b = CircuitBreaker("recs", window_size=2, minimum_calls=2, open_duration=60)
    assert b.call(boom, fallback=lambda exc: "cached") == "cached"
    assert b.call(boom, fallback=lambda exc: "cached") == "cached"
    assert b.state is State.OPEN
    seen = []
    assert b.call(lambda: "live", fallback=lambda exc: seen.append(type(exc)) or "cached") == "cached"
    assert seen == [CircuitBreakerOpen]
    assert any(e.name == "circuit_breaker.fallback" for e in spans.named("circuit_breaker recs")[0].events)


def test_only_configured_failures_count(spans) -> None:
    b = CircuitBreaker("p", window_size=2, minimum_calls=2, failure_on=(ConnectionError,))
    for _ in range(4):
        with pytest.raises(KeyError):
            b.call(lambda: {}["x"])
    assert b.state is State.CLOSED


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum_calls"):
        CircuitBreaker("p", window_size=5, minimum_calls=10)
    with pytest.raises(ValueError, match="failure_rate_threshold"):
        CircuitBreaker("p", failure_rate_threshold=0)


def test_bulkhead_rejects_calls_beyond_its_limit(spans) -> None:
    bulkhead = Bulkhead("db", limit=1)
    gate, inside = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        gate.wait(5)

    t = threading.Thread(target=bulkhead.call, args=(hold,))
    t.start()
    inside.wait(5)
    with pytest.raises(BulkheadPoolExhausted, match="all 1 slots busy"):
        bulkhead.call(lambda: 1)
    gate.set()
    t.join()
    assert bulkhead.call(lambda: 2) == 2
    with pytest.raises(ValueError):
        Bulkhead("x", limit=0)
