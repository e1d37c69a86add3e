"""A circuit breaker with failure-rate and slow-call-rate thresholds, half-open probes and a fallback.

pybreaker counts consecutive failures only; rates over a sliding window (resilience4j's model)
need the outcome of each of the last ``window_size`` calls, so the breaker is written here, small.
- CLOSED: calls pass; once ``minimum_calls`` are in the window, a failure rate ≥
  ``failure_rate_threshold`` or a slow-call rate (calls longer than ``slow_call_duration``) ≥
  ``slow_call_rate_threshold`` opens it.
- OPEN: calls are rejected (``CircuitBreakerOpen``, or the fallback's answer) for ``open_duration``.
- HALF_OPEN: ``half_open_probes`` calls pass; their rates decide CLOSED or OPEN again.
Each state change is a span event ``circuit_breaker.state_change`` on the current span and two
metrics (``circuit_breaker.transitions`` counter, ``circuit_breaker.state`` gauge 0/1/2). A
rejected call is a failing CLIENT span naming the dependency (``peer.service``), so classify
files it under ``dependency_unavailable`` with the dependency as the origin::

    breaker = CircuitBreaker("payments", failure_rate_threshold=0.5, open_duration=10)
    receipt = breaker.call(charge, order, fallback=lambda exc: queue_for_later(order))
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from errorgate_kit._otel import meter, record_error, tracer

T = TypeVar("T")


class State(str, Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


class CircuitBreakerOpen(Exception):
    """Rejected without calling: the breaker is open (or its half-open probes are all taken)."""


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_rate_threshold: float = 1.0,
        slow_call_duration: float = 5.0,
        window_size: int = 20,
        minimum_calls: int = 10,
        open_duration: float = 30.0,
        half_open_probes: int = 3,
        failure_on: tuple[type[BaseException], ...] = (Exception,),
        peer_service: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < failure_rate_threshold <= 1 or not 0 < slow_call_rate_threshold <= 1:
            raise ValueError("failure_rate_threshold and slow_call_rate_threshold must be in (0, 1]")
        if not 1 <= minimum_calls <= window_size or half_open_probes < 1:
            raise ValueError("need 1 <= minimum_calls <= window_size and half_open_probes >= 1")
        self.name = name
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.slow_call_duration = slow_call_duration
        self.minimum_calls = minimum_calls
        self.open_duration = open_duration
        self.half_open_probes = half_open_probes
        self.failure_on = failure_on
        self.peer_service = peer_service or name
        self.clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._window: deque[tuple[bool, bool]] = deque(maxlen=window_size)  # (failed, slow)
        self._opened_at = 0.0
        self._probes_started = 0
        self._listeners: list[Callable[[State, State], None]] = []
        m = meter()
        self._transitions = m.create_counter("circuit_breaker.transitions", description="state changes")
        self._gauge = m.create_gauge("circuit_breaker.state", description="0 closed, 1 half-open, 2 open")
        self._gauge.set(0, {"circuit_breaker.name": name})

    @property
    def state(self) -> State:
        with self._lock:
            self._maybe_half_open()
            return self._state

    def on_change(self, listener: Callable[[State, State], None]) -> None:
        self._listeners.append(listener)

    def call(
        self,
        fn: Callable[..., T],
        *args: object,
        fallback: Callable[[Exception], T] | None = None,
        **kwargs: object,
    ) -> T:
        """``fn(*args, **kwargs)`` through the breaker; when rejected, ``fallback(exc)`` if given."""
        if not self._admit():
            exc = CircuitBreakerOpen(f"circuit breaker {self.name!r} is open: call rejected")
            self._record_rejection(exc, fallback is not None)
            if fallback is None:
                raise exc
            return fallback(exc)
        started = self.clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            counted = isinstance(exc, self.failure_on)
            self._record(
                failed=counted, slow=self.clock() - started > self.slow_call_duration, counted=counted
            )
            if fallback is not None and isinstance(exc, Exception):
                return fallback(exc)
            raise
        self._record(failed=False, slow=self.clock() - started > self.slow_call_duration, counted=True)
        return result

    # ------------------------------------------------------------------ state machine

    def _admit(self) -> bool:
        with self._lock:
            self._maybe_half_open()
            if self._state is State.OPEN:
                return False
            if self._state is State.HALF_OPEN:
                if self._probes_started >= self.half_open_probes:
                    return False  # the probes are out: everyone else waits for their verdict
                self._probes_started += 1
            return True

    def _maybe_half_open(self) -> None:
        if self._state is State.OPEN and self.clock() - self._opened_at >= self.open_duration:
            self._transition(State.HALF_OPEN)

    def _record(self, *, failed: bool, slow: bool, counted: bool) -> None:
        with self._lock:
            if not counted and not slow:
                if self._state is State.HALF_OPEN:
                    self._probes_started -= 1  # an ignored error is no verdict: let another probe in
                return
            self._window.append((failed, slow))
            if self._state is State.HALF_OPEN:
                if len(self._window) >= self.half_open_probes:
                    self._transition(State.OPEN if self._over_threshold() else State.CLOSED)
            elif (
                self._state is State.CLOSED
                and len(self._window) >= self.minimum_calls
                and self._over_threshold()
            ):
                self._transition(State.OPEN)

    def _rates(self) -> tuple[float, float]:
        n = len(self._window) or 1
        return sum(f for f, _ in self._window) / n, sum(s for _, s in self._window) / n

    def _over_threshold(self) -> bool:
        failure_rate, slow_rate = self._rates()
        return failure_rate >= self.failure_rate_threshold or slow_rate >= self.slow_call_rate_threshold

    def _transition(self, new: State) -> None:
        """Called with the lock held."""
        old = self._state
        failure_rate, slow_rate = self._rates()
        self._state = new
        self._window.clear()  # each state judges its own calls
        self._probes_started = 0
        if new is State.OPEN:
            self._opened_at = self.clock()
        attrs = {"circuit_breaker.name": self.name, "circuit_breaker.state.from": old.value}
        attrs["circuit_breaker.state.to"] = new.value
        trace.get_current_span().add_event(
            "circuit_breaker.state_change",
            {
                **attrs,
                "circuit_breaker.failure_rate": failure_rate,
                "circuit_breaker.slow_call_rate": slow_rate,
            },
        )
        self._transitions.add(1, attrs)
        self._gauge.set(_GAUGE[new], {"circuit_breaker.name": self.name})
        for listener in self._listeners:
            listener(old, new)

    def _record_rejection(self, exc: CircuitBreakerOpen, has_fallback: bool) -> None:
        attrs = {"peer.service": self.peer_service, "circuit_breaker.name": self.name}
        with tracer().start_as_current_span(f"circuit_breaker {self.name}", kind=SpanKind.CLIENT) as span:
            span.set_attributes(attrs)
            record_error(span, exc)
            if has_fallback:
                span.add_event("circuit_breaker.fallback", {"circuit_breaker.name": self.name})
