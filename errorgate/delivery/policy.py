"""Retry backoff and circuit breaker used by ``errorgate.delivery.exporter`` (pure state machines, no I/O)."""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, wait_random_exponential

from errorgate.config import CircuitBreakerConfig, RetryConfig


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(max_interval,
    initial_interval * multiplier**(n-1))) — tenacity's ``wait_random_exponential``.

    A server hint (gRPC RetryInfo, HTTP Retry-After) replaces the computed delay: the backend
    knows when it will be ready, and waiting less only earns another refusal.
    """

    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._wait = wait_random_exponential(
            multiplier=config.initial_interval, max=config.max_interval, exp_base=config.multiplier
        )
        self._rng = rng

    def window(self, attempt: int) -> float:
        """Upper bound of the jitter window after failed attempt number ``attempt`` (1-based)."""
        c = self.config
        return float(min(c.max_interval, c.initial_interval * c.multiplier ** max(0, attempt - 1)))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None and retry_after >= 0:
            # A floor keeps a "retry after 0" answer from turning into a busy loop.
            return max(retry_after, 0.01)
        if self._rng is not None:
            return self._rng.uniform(0, self.window(attempt))
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = attempt
        return float(self._wait(state))


class CircuitState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failed attempts; while open no attempt is
    made for ``open_duration``; then one probe is let through (half-open): success closes
    the circuit, failure opens it again. Thread-safe: several consumers share one breaker."""

    def __init__(
        self,
        config: CircuitBreakerConfig,
        on_change: Callable[[CircuitState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self.transitions: list[CircuitState] = []

    @property
    def state(self) -> CircuitState:
        with self._lock:
            if (
                self._state is CircuitState.OPEN
                and self._clock() >= self._opened_at + self.config.open_duration
            ):
                # Report what the next caller will find; the transition itself happens in acquire().
                return CircuitState.HALF_OPEN
            return self._state

    def acquire(self) -> float:
        """0 if an attempt may be made now, else how long to wait before asking again."""
        if not self.config.enabled:
            return 0.0
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return 0.0
            now = self._clock()
            if self._state is CircuitState.OPEN:
                left = self._opened_at + self.config.open_duration - now
                if left > 0:
                    return left
                self._set(CircuitState.HALF_OPEN)
            if self._probe_out:
                return 0.05
            self._probe_out = True
            return 0.0

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probe_out = False
            if self._state is not CircuitState.CLOSED:
                self._set(CircuitState.CLOSED)

    def failure(self) -> None:
        if not self.config.enabled:
            return
        with self._lock:
            self._probe_out = False
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or (
                self._state is CircuitState.CLOSED and self._failures >= self.config.failure_threshold
            ):
                self._opened_at = self._clock()
                self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        self._state = state
        self.transitions.append(state)
        if self._on_change is not None:
            self._on_change(state)
