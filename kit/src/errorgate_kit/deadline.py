"""Timeout contracts: an absolute deadline travelling in W3C baggage (and gRPC's ``grpc-timeout``).

The caller sets a budget; every hop reads the same absolute deadline, so a callee never works
past it: ``check()`` before side effects, ``timeout_for()`` for socket timeouts, and the retry
policy stops instead of sleeping past it. A callee can shorten the deadline, never extend it.
The value is Unix epoch milliseconds (wall clock, so hosts need NTP-level agreement)::

    with deadline.budget(2.0):          # the caller: 2 s for the whole request tree
        call_inventory()                # correlation.inject_http() carries it
    ...
    deadline.check("reserve stock")     # the callee: raises DeadlineExceeded when it passed
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context

from errorgate_kit._otel import record_error

BAGGAGE_KEY = "errorgate.deadline"
_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")  # gRPC over HTTP/2: at most 8 digits


class DeadlineExceeded(TimeoutError):
    """The caller's deadline passed; classify files it under ``timeout`` (``*deadlineexceeded*``)."""


def deadline_at(ctx: Context | None = None) -> float | None:
    """The deadline in the context as Unix seconds, or None (no deadline, or an unreadable one)."""
    raw = baggage.get_baggage(BAGGAGE_KEY, ctx)
    if raw is None:
        return None
    try:
        return int(str(raw)) / 1000.0
    except ValueError:
        return None  # a malformed entry from a peer must not fail the request: treated as absent


def remaining(ctx: Context | None = None) -> float | None:
    """Seconds left before the deadline (negative once it passed), or None without a deadline."""
    at = deadline_at(ctx)
    return None if at is None else at - time.time()


def with_deadline(seconds: float, ctx: Context | None = None) -> Context:
    """A context whose deadline is ``seconds`` from now, or the existing one if that is sooner."""
    if seconds < 0:
        raise ValueError(f"deadline budget must be >= 0 seconds, got {seconds}")
    at = time.time() + seconds
    current = deadline_at(ctx)
    if current is not None and current <= at:
        return ctx if ctx is not None else context.get_current()
    return baggage.set_baggage(BAGGAGE_KEY, str(int(at * 1000)), ctx)


@contextmanager
def budget(seconds: float) -> Iterator[float]:
    """Attach a deadline ``seconds`` from now (or keep a sooner one) for the block; yields its Unix time."""
    ctx = with_deadline(seconds)
    token = context.attach(ctx)
    try:
        yield deadline_at(ctx) or 0.0
    finally:
        context.detach(token)


def check(operation: str = "") -> None:
    """Raise ``DeadlineExceeded`` (recorded on the current span) when the deadline has passed."""
    left = remaining()
    if left is not None and left <= 0:
        what = f" before {operation}" if operation else ""
        exc = DeadlineExceeded(f"deadline exceeded{what} ({-left * 1000:.0f} ms ago)")
        record_error(trace.get_current_span(), exc)
        raise exc


def timeout_for(default: float, operation: str = "") -> float:
    """A socket/read timeout for an outgoing call: ``default`` capped by the time left; raises
    ``DeadlineExceeded`` instead of returning a timeout of zero or less."""
    check(operation)
    left = remaining()
    return default if left is None else min(default, left)


def grpc_timeout(ctx: Context | None = None) -> str | None:
    """The ``grpc-timeout`` metadata value for the time left (milliseconds), or None."""
    left = remaining(ctx)
    if left is None:
        return None
    return f"{max(0, int(left * 1000))}m"


def parse_grpc_timeout(value: str) -> float:
    """Seconds in a ``grpc-timeout`` value such as ``250m`` or ``3S``; ValueError names the value."""
    match = _GRPC_TIMEOUT.match(value.strip())
    if match is None:
        raise ValueError(f"malformed grpc-timeout {value!r}: expected up to 8 digits and one of H M S m u n")
    return int(match.group(1)) * _GRPC_UNITS[match.group(2)]
