"""Retries with exponential backoff and jitter, on tenacity, one CLIENT span per attempt.

classify sees a retried-then-succeeded operation as failing spans with a later successful sibling
of the same name under the same parent: that is exactly what ``RetryPolicy.call`` emits, each
resend carrying ``http.request.resend_count``. Waits use full jitter (``random(0, min(cap,
initial·2ⁿ))``) or decorrelated jitter (``min(cap, random(initial, 3·previous))``), never less
than a ``Retry-After`` the server sent (up to ``max_retry_after``), and the loop stops rather
than sleep past the deadline in baggage (``errorgate_kit.deadline``). ``acall`` is the same loop
for coroutines (tenacity's ``AsyncRetrying``: the waits suspend the task, not the event loop).
Each attempt also counts in the ``retry.attempts`` metric (``retry.operation`` = the span name,
``retry.outcome`` = ``success`` | ``failure``, and ``error.type`` on failures)::

    policy = RetryPolicy(max_attempts=4, initial=0.1, jitter="decorrelated")
    stock = policy.call(fetch_stock, sku, span_name="GET /stock", attributes={"peer.service": "inventory"})
    stock = await policy.acall(fetch_stock_async, sku, span_name="GET /stock")
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import tenacity
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from errorgate_kit import deadline
from errorgate_kit._otel import counter, record_error, tracer

T = TypeVar("T")
RESEND_COUNT = "http.request.resend_count"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HTTPStatusError(Exception):
    """A response with an error status. ``retry_after``: seconds the server asked to wait."""

    def __init__(self, status: int, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class RetryableError(HTTPStatusError):
    """A failure worth another attempt (a retryable status, or raised by the caller)."""

    def __init__(self, message: str = "", *, status: int = 503, retry_after: float | None = None) -> None:
        super().__init__(status, message, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date); None when
    absent or unreadable (a bad header from a server must not break the client's retry loop)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def raise_for_status(status: int, headers: Mapping[str, str] | None = None) -> None:
    """Raise ``RetryableError`` for 408/425/429/5xx-retryable, ``HTTPStatusError`` for other ≥ 400."""
    if status < 400:
        return
    after = None
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            after = parse_retry_after(value)
    if status in RETRYABLE_STATUS:
        raise RetryableError(f"HTTP {status}", status=status, retry_after=after)
    raise HTTPStatusError(status, f"HTTP {status}", after)


class wait_decorrelated_jitter(tenacity.wait.wait_base):
    """AWS' decorrelated jitter: each wait random in [initial, 3 × previous wait], capped."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial, self.cap, self.rng = initial, cap, rng or random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        # tenacity computes the wait before storing it: ``upcoming_sleep`` still holds the previous one.
        previous = retry_state.upcoming_sleep or self.initial
        return min(self.cap, self.rng.uniform(self.initial, previous * 3))


class wait_retry_after(tenacity.wait.wait_base):
    """``inner``'s wait, but at least the ``retry_after`` the failed attempt's error carries."""

    def __init__(self, inner: tenacity.wait.wait_base, limit: float) -> None:
        self.inner, self.limit = inner, limit

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.inner(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if isinstance(after, int | float) and after > 0:
            wait = max(wait, min(float(after), self.limit))
        return wait


class stop_before_deadline(tenacity.stop.stop_base):
    """Stop when the next wait would end past the deadline in baggage: a retry the caller can
    no longer use is load on a struggling dependency for nothing."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        left = deadline.remaining()
        return left is not None and left <= retry_state.upcoming_sleep


def _retryable(kinds: tuple[type[BaseException], ...]) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, deadline.DeadlineExceeded):
            return False  # the caller's budget is spent: another attempt cannot help
        if isinstance(exc, HTTPStatusError) and not isinstance(exc, RetryableError):
            return False
        return isinstance(exc, kinds)

    return check


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    initial: float = 0.1
    max_backoff: float = 10.0
    jitter: Literal["full", "decorrelated"] = "full"
    retry_on: tuple[type[BaseException], ...] = (RetryableError, ConnectionError, TimeoutError)
    max_retry_after: float = 60.0  # a server asking for more is not waited for: the loop gives up
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # the waits of ``acall``

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.jitter not in ("full", "decorrelated"):
            raise ValueError(f"jitter must be 'full' or 'decorrelated', got {self.jitter!r}")

    def _strategy(self) -> dict[str, Any]:
        """When to stop, how long to wait, what to retry: shared by the sync and async loops."""
        base: tenacity.wait.wait_base = (
            tenacity.wait_random_exponential(multiplier=self.initial, max=self.max_backoff)
            if self.jitter == "full"
            else wait_decorrelated_jitter(self.initial, self.max_backoff)
        )
        return {
            "stop": tenacity.stop_after_attempt(self.max_attempts) | stop_before_deadline(),
            "wait": wait_retry_after(base, self.max_retry_after),
            "retry": tenacity.retry_if_exception(_retryable(self.retry_on)),
            "reraise": True,  # the caller sees the last real error, not tenacity's RetryError
        }

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(sleep=self.sleep, **self._strategy())

    def async_retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(sleep=self.async_sleep, **self._strategy())

    def call(
        self,
        fn: Callable[..., T],
        *args: object,
        span_name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        **kwargs: object,
    ) -> T:
        """``fn(*args, **kwargs)`` retried; each attempt runs inside its own CLIENT span named
        ``span_name`` (current during ``fn``, so it can add the status code or inject headers)."""
        for attempt in self.retrying():
            with attempt, _attempt_span(span_name, attributes, attempt.retry_state.attempt_number):
                return fn(*args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def acall(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: object,
        span_name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        **kwargs: object,
    ) -> T:
        """``await fn(*args, **kwargs)`` retried, with the same spans, metrics and waits as ``call``."""
        async for attempt in self.async_retrying():
            with attempt, _attempt_span(span_name, attributes, attempt.retry_state.attempt_number):
                return await fn(*args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


@contextmanager
def _attempt_span(
    span_name: str, attributes: Mapping[str, AttributeValue] | None, attempt_number: int
) -> Iterator[Span]:
    """One attempt's CLIENT span (``http.request.resend_count`` from the second on) and its count
    in ``retry.attempts``; a failure marks the span the way classify reads it."""
    attempts = counter("retry.attempts", "attempts of retried operations, by outcome")
    with tracer().start_as_current_span(
        span_name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if attempt_number > 1:
            span.set_attribute(RESEND_COUNT, attempt_number - 1)
        try:
            yield span
        except BaseException as exc:
            if isinstance(exc, HTTPStatusError):
                span.set_attribute("http.response.status_code", exc.status)
            record_error(span, exc)
            attempts.add(
                1,
                {
                    "retry.operation": span_name,
                    "retry.outcome": "failure",
                    "error.type": type(exc).__qualname__,
                },
            )
            raise
        attempts.add(1, {"retry.operation": span_name, "retry.outcome": "success"})
