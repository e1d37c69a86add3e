"""retry and bulkhead for asyncio services: the same spans per attempt (http.request.resend_count)
and metrics as the thread versions, waits that suspend the task and not the event loop, the
caller's deadline honoured across awaits, and a bulkhead that rejects or queues coroutines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from errorgate_kit import deadline
from errorgate_kit.bulkhead import AsyncBulkhead, Bulkhead, BulkheadPoolExhausted
from errorgate_kit.retry import HTTPStatusError, RetryableError, RetryPolicy
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.kit.conftest import assert_retried_twice_then_succeeded


def points(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    """The metric's current value per attribute set (cumulative since the session started)."""
    data = reader.get_metrics_data()
    found: dict[frozenset[tuple[str, Any]], float] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        found[frozenset((p.attributes or {}).items())] = p.value
    return found


def flaky_coroutine(failures: int, exc: Exception | None = None):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    async def call(sku: str) -> str:
        calls["n"] += 1
        await asyncio.sleep(0)
        if calls["n"] <= failures:
            raise exc or RetryableError("inventory unavailable", status=503)
        return f"{sku}: 3 in stock"

    return call, calls


def test_async_retry_leaves_the_same_attempt_spans_and_metrics(spans, metric_reader) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_attempts=4, initial=0.01, async_sleep=fake_sleep)
    call, calls = flaky_coroutine(2)

    async def scenario() -> str:
        with trace.get_tracer("t").start_as_current_span("parent"):
            return await policy.acall(
                call, "A1", span_name="GET /stock-async", attributes={"peer.service": "inventory"}
            )

    assert asyncio.run(scenario()) == "A1: 3 in stock"
    assert_retried_twice_then_succeeded(spans, "GET /stock-async", calls, slept)
    counts = points(metric_reader, "retry.attempts")
    op = ("retry.operation", "GET /stock-async")
    assert counts[frozenset({op, ("retry.outcome", "failure"), ("error.type", "RetryableError")})] == 2
    assert counts[frozenset({op, ("retry.outcome", "success")})] == 1


def test_sync_retry_counts_attempts_in_the_same_metric(spans, metric_reader) -> None:
    policy = RetryPolicy(max_attempts=3, initial=0.001, sleep=lambda s: None)
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("reset")
        return "ok"

    assert policy.call(call, span_name="GET /sync-op") == "ok"
    counts = points(metric_reader, "retry.attempts")
    op = ("retry.operation", "GET /sync-op")
    assert counts[frozenset({op, ("retry.outcome", "failure"), ("error.type", "ConnectionError")})] == 1
    assert counts[frozenset({op, ("retry.outcome", "success")})] == 1


def test_async_retry_waits_do_not_block_the_event_loop(spans) -> None:
    """Five calls each wait twice for a 0.2 s Retry-After: concurrently that is ~0.4 s, where a
    loop blocked by the waits would take 2 s."""
    policy = RetryPolicy(max_attempts=3, initial=0.001, max_backoff=0.001)

    async def scenario() -> float:
        calls = [flaky_coroutine(2, RetryableError("busy", status=429, retry_after=0.2))[0] for _ in range(5)]
        started = time.monotonic()
        results = await asyncio.gather(*(policy.acall(c, "A1", span_name="GET /busy") for c in calls))
        assert results == ["A1: 3 in stock"] * 5
        return time.monotonic() - started

    elapsed = asyncio.run(scenario())
    assert 0.4 <= elapsed < 1.2, elapsed


def test_async_retry_stops_at_the_deadline_and_on_non_retryable(spans) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_attempts=10, initial=0.001, async_sleep=fake_sleep)
    busy, busy_calls = flaky_coroutine(10, RetryableError("busy", retry_after=30))
    bad, bad_calls = flaky_coroutine(10, HTTPStatusError(400, "bad request"))

    async def scenario() -> None:
        with deadline.budget(1.0), pytest.raises(RetryableError):
            await policy.acall(busy, "A1", span_name="op")
        with pytest.raises(HTTPStatusError):
            await policy.acall(bad, "A1", span_name="op")

    asyncio.run(scenario())
    assert busy_calls["n"] == 1 and bad_calls["n"] == 1 and slept == []


def test_async_bulkhead_rejects_the_overflow_and_reports_it(spans, metric_reader) -> None:
    bulkhead = AsyncBulkhead("inventory-async", limit=2)
    labels = frozenset({("bulkhead.name", "inventory-async")})

    async def scenario() -> None:
        gate = asyncio.Event()

        async def hold() -> str:
            await gate.wait()
            return "done"

        held = [asyncio.create_task(bulkhead.call(hold)) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert points(metric_reader, "bulkhead.in_use")[labels] == 2
        checkout = trace.get_tracer("t").start_as_current_span("GET /checkout")
        with checkout, pytest.raises(BulkheadPoolExhausted, match="all 2 slots busy"):
            await bulkhead.call(hold)
        gate.set()
        assert await asyncio.gather(*held) == ["done", "done"]
        assert await bulkhead.call(hold) == "done"  # slots are given back

    asyncio.run(scenario())
    checkout = spans.named("GET /checkout")[0]
    assert checkout.attributes["error.type"] == "BulkheadPoolExhausted"
    assert checkout.events[0].name == "exception"
    assert points(metric_reader, "bulkhead.rejections")[labels] == 1
    assert points(metric_reader, "bulkhead.in_use")[labels] == 0


def test_async_bulkhead_queues_up_to_max_wait(spans) -> None:
    bulkhead = AsyncBulkhead("db-async", limit=1, max_wait=1.0)

    async def slow(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def scenario() -> None:
        # The second waits ~0.1 s for the slot and gets it; the third would wait past 1 s.
        assert await asyncio.gather(bulkhead.call(slow, 0.1), bulkhead.call(slow, 0.05)) == [0.1, 0.05]
        first = asyncio.create_task(bulkhead.call(slow, 1.5))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(BulkheadPoolExhausted):
            await bulkhead.call(slow, 0)
        assert 0.9 <= time.monotonic() - started < 1.4
        assert await first == 1.5

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="limit"):
        AsyncBulkhead("x", limit=0)
    with pytest.raises(ValueError, match="max_wait"):
        AsyncBulkhead("x", limit=1, max_wait=-1)


def test_thread_bulkhead_reports_the_same_metrics(spans, metric_reader) -> None:
    bulkhead = Bulkhead("db-sync", limit=1)
    labels = frozenset({("bulkhead.name", "db-sync")})

    def reenter() -> None:
        bulkhead.call(lambda: None)  # the only slot is ours: rejected

    with pytest.raises(BulkheadPoolExhausted):
        bulkhead.call(reenter)
    assert points(metric_reader, "bulkhead.rejections")[labels] == 1
    assert points(metric_reader, "bulkhead.in_use")[labels] == 0
