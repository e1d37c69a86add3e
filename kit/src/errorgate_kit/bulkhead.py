"""A bulkhead: at most ``limit`` concurrent calls into one dependency, others wait up to
``max_wait`` and are then rejected, so one slow dependency cannot take every worker thread.
The rejection's type name contains ``PoolExhausted``: classify files it under ``resource_exhausted``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from opentelemetry import trace

from errorgate_kit._otel import record_error

T = TypeVar("T")


class BulkheadPoolExhausted(Exception):
    """Every slot of the bulkhead stayed busy for ``max_wait`` seconds."""


class Bulkhead:
    def __init__(self, name: str, limit: int, max_wait: float = 0.0) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead {name!r}: limit must be >= 1, got {limit}")
        self.name, self.limit, self.max_wait = name, limit, max_wait
        self._slots = threading.BoundedSemaphore(limit)

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self.max_wait > 0:
            acquired = self._slots.acquire(timeout=self.max_wait)
        else:
            acquired = self._slots.acquire(blocking=False)
        if not acquired:
            exc = BulkheadPoolExhausted(f"bulkhead {self.name!r}: all {self.limit} slots busy")
            record_error(trace.get_current_span(), exc)
            raise exc
        try:
            return fn(*args, **kwargs)
        finally:
            self._slots.release()
