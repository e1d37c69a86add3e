"""deadline + correlation: the deadline and correlation id travel in W3C baggage over HTTP, gRPC
metadata and message headers; a callee refuses work past the caller's deadline."""

from __future__ import annotations

import time

import pytest
from errorgate_kit import correlation, deadline
from opentelemetry import trace
from opentelemetry.trace import StatusCode


def test_deadline_travels_in_baggage_and_a_callee_stops_past_it(spans) -> None:
    with deadline.budget(0.05):
        headers = correlation.inject_http({})
    assert "errorgate.deadline=" in headers["baggage"]
    ctx = correlation.extract_http({k.title(): v for k, v in headers.items()})  # any header case
    with correlation.attached(ctx):
        assert 0 < deadline.remaining() <= 0.05
        time.sleep(0.06)
        with trace.get_tracer("t").start_as_current_span("reserve"), pytest.raises(deadline.DeadlineExceeded):
            deadline.check("reserve stock")
    span = spans.named("reserve")[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "DeadlineExceeded"


def test_a_callee_can_shorten_but_never_extend_the_deadline() -> None:
    with deadline.budget(1.0) as outer:
        with deadline.budget(10.0) as inner:
            assert inner == outer
        with deadline.budget(0.1) as shorter:
            assert shorter < outer
        assert deadline.timeout_for(30) <= 1.0


def test_grpc_metadata_carries_context_and_grpc_timeout() -> None:
    with trace.get_tracer("t").start_as_current_span("call"), deadline.budget(2.0):
        metadata = correlation.inject_grpc([])
        cid = correlation.correlation_id(correlation.ensure_correlation_id())
    keys = dict(metadata)
    assert "traceparent" in keys and keys["grpc-timeout"].endswith("m")
    ctx = correlation.extract_grpc(
        [("grpc-timeout", "500m"), *[(k, v) for k, v in metadata if k != "grpc-timeout"]]
    )
    assert deadline.remaining(ctx) <= 0.5
    assert correlation.correlation_id(ctx) is not None and cid is not None
    with pytest.raises(ValueError, match="malformed grpc-timeout"):
        correlation.extract_grpc([("grpc-timeout", "soon")])


def test_correlation_id_is_created_once_and_kept_across_hops() -> None:
    ctx = correlation.extract_http({})
    first = correlation.correlation_id(ctx)
    assert first and len(first) == 32
    with correlation.attached(ctx):
        headers = correlation.inject_message({})
    assert headers[correlation.HEADER] == first
    assert correlation.correlation_id(correlation.extract_message(headers)) == first
    # A peer that only sends x-correlation-id keeps its id; a hostile one is replaced.
    assert correlation.correlation_id(correlation.extract_http({"X-Correlation-ID": "abc-1"})) == "abc-1"
    assert correlation.correlation_id(correlation.extract_http({"x-correlation-id": "x" * 500})) != "x" * 500


def test_unreadable_deadline_from_a_peer_is_ignored_and_bad_budgets_refused() -> None:
    ctx = correlation.extract_http({"baggage": "errorgate.deadline=tomorrow"})
    assert deadline.remaining(ctx) is None
    with pytest.raises(ValueError):
        deadline.with_deadline(-1)
