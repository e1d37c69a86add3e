"""retry: one CLIENT span per attempt with http.request.resend_count, jittered backoff bounded
by the cap, Retry-After honoured, no retry past the deadline or on non-retryable statuses."""

from __future__ import annotations

import random

import pytest
import tenacity
from errorgate_kit import deadline
from errorgate_kit.retry import (
    HTTPStatusError,
    RetryableError,
    RetryPolicy,
    parse_retry_after,
    raise_for_status,
    wait_decorrelated_jitter,
)
from opentelemetry import trace

from tests.kit.conftest import assert_retried_twice_then_succeeded


def flaky(failures: int, exc: Exception | None = None):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise exc or RetryableError("inventory unavailable", status=503)
        return "ok"

    return call, calls


def test_retried_then_succeeded_leaves_sibling_attempt_spans_with_resend_count(spans) -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=4, initial=0.01, sleep=slept.append)
    call, calls = flaky(2)
    with trace.get_tracer("t").start_as_current_span("parent"):
        assert policy.call(call, span_name="GET /stock", attributes={"peer.service": "inventory"}) == "ok"
    assert_retried_twice_then_succeeded(spans, "GET /stock", calls, slept)


def test_attempts_are_bounded_and_the_last_real_error_surfaces(spans) -> None:
    policy = RetryPolicy(max_attempts=3, initial=0.001, sleep=lambda s: None)
    call, calls = flaky(10)
    with pytest.raises(RetryableError, match="inventory unavailable"):
        policy.call(call, span_name="op")
    assert calls["n"] == 3


def test_non_retryable_status_is_not_retried(spans) -> None:
    policy = RetryPolicy(max_attempts=5, initial=0.001, sleep=lambda s: None)
    call, calls = flaky(1, HTTPStatusError(400, "bad request"))
    with pytest.raises(HTTPStatusError):
        policy.call(call, span_name="op")
    assert calls["n"] == 1


def test_retry_after_is_honoured_but_capped(spans) -> None:
    slept: list[float] = []
    policy = RetryPolicy(
        max_attempts=3, initial=0.001, max_backoff=0.01, max_retry_after=5, sleep=slept.append
    )
    call, _ = flaky(2, RetryableError("slow down", status=429, retry_after=2.5))
    policy.call(call, span_name="op")
    assert slept == [2.5, 2.5]
    slept.clear()
    call, _ = flaky(1, RetryableError("slow down", status=429, retry_after=600))
    policy.call(call, span_name="op")
    assert slept == [5]


def test_full_jitter_waits_stay_within_the_exponential_cap(spans) -> None:
    slept: list[float] = []
    random.seed(7)
    policy = RetryPolicy(max_attempts=6, initial=0.1, max_backoff=0.5, sleep=slept.append)
    call, _ = flaky(5)
    policy.call(call, span_name="op")
    assert len(slept) == 5 and all(0 <= s <= 0.5 for s in slept)
    assert len(set(slept)) == 5  # jittered: no synchronized herd


def test_decorrelated_jitter_grows_from_previous_wait_and_is_capped() -> None:
    wait = wait_decorrelated_jitter(0.1, 1.0, random.Random(1))
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    seen = []
    for _ in range(20):
        state.upcoming_sleep = wait(state)
        seen.append(state.upcoming_sleep)
    assert all(0.1 <= s <= 1.0 for s in seen) and max(seen) == 1.0


def test_no_sleep_past_the_callers_deadline(spans) -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=10, initial=0.001, sleep=slept.append)
    call, calls = flaky(10, RetryableError("busy", retry_after=30))
    with deadline.budget(1.0), pytest.raises(RetryableError):
        policy.call(call, span_name="op")
    assert calls["n"] == 1 and slept == []


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    with pytest.raises(RetryableError) as e:
        raise_for_status(503, {"Retry-After": "3"})
    assert e.value.retry_after == 3
    raise_for_status(204)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter="equal")  # type: ignore[arg-type]
