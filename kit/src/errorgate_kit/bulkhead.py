"""A bulkhead: at most ``limit`` concurrent calls into one dependency, others wait up to
``max_wait`` and are then rejected, so one slow dependency cannot take every worker thread
(``Bulkhead``) or every in-flight coroutine of an asyncio service (``AsyncBulkhead``).
The rejection's type name contains ``PoolExhausted``: classify files it under ``resource_exhausted``.

Both record a rejection on the current span (exception event, ``error.type``) and report two
metrics labelled ``bulkhead.name``: ``bulkhead.rejections`` (counter) and ``bulkhead.in_use``
(up-down counter of the slots taken)::

    db = Bulkhead("orders-db", limit=10, max_wait=0.5)
    row = db.call(fetch_order, order_id)
    inventory = AsyncBulkhead("inventory", limit=20)
    stock = await inventory.call(fetch_stock, sku)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from opentelemetry import trace

from errorgate_kit._otel import counter, record_error, up_down_counter

T = TypeVar("T")


class BulkheadPoolExhausted(Exception):
    """Every slot of the bulkhead stayed busy for ``max_wait`` seconds."""


class _BulkheadBase:
    """What the thread and asyncio bulkheads share: settings, the rejection and the metrics."""

    def __init__(self, name: str, limit: int, max_wait: float) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead {name!r}: limit must be >= 1, got {limit}")
        if max_wait < 0:
            raise ValueError(f"bulkhead {name!r}: max_wait must be >= 0, got {max_wait}")
        self.name, self.limit, self.max_wait = name, limit, max_wait
        self._labels = {"bulkhead.name": name}
        self._rejections = counter("bulkhead.rejections", "calls refused because every slot stayed busy")
        self._in_use = up_down_counter("bulkhead.in_use", "slots taken by running calls")

    def _rejection(self) -> BulkheadPoolExhausted:
        exc = BulkheadPoolExhausted(f"bulkhead {self.name!r}: all {self.limit} slots busy")
        record_error(trace.get_current_span(), exc)
        self._rejections.add(1, self._labels)
        return exc


class Bulkhead(_BulkheadBase):
    def __init__(self, name: str, limit: int, max_wait: float = 0.0) -> None:
        super().__init__(name, limit, max_wait)
        self._slots = threading.BoundedSemaphore(limit)

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self.max_wait > 0:
            acquired = self._slots.acquire(timeout=self.max_wait)
        else:
            acquired = self._slots.acquire(blocking=False)
        if not acquired:
            raise self._rejection()
        self._in_use.add(1, self._labels)
        try:
            return fn(*args, **kwargs)
        finally:
            self._in_use.add(-1, self._labels)
            self._slots.release()


class AsyncBulkhead(_BulkheadBase):
    """The asyncio twin of ``Bulkhead``: ``fn`` is a coroutine function, waiting for a slot
    suspends the caller's task only (never the event loop)."""

    def __init__(self, name: str, limit: int, max_wait: float = 0.0) -> None:
        super().__init__(name, limit, max_wait)
        self._slots = asyncio.BoundedSemaphore(limit)

    async def _acquire(self) -> bool:
        if self.max_wait <= 0:
            if self._slots.locked():  # also true while earlier callers queue: no overtaking them
                return False
            await self._slots.acquire()  # a free slot: returns at once
            return True
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait)
        except TimeoutError:
            return False
        return True

    async def call(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T:
        if not await self._acquire():
            raise self._rejection()
        self._in_use.add(1, self._labels)
        try:
            return await fn(*args, **kwargs)
        finally:
            self._in_use.add(-1, self._labels)
            self._slots.release()
