"""Exporter sending queues: in memory (``MemoryQueue``) or persistent on disk (``PersistentQueue``,
in ``errorgate.delivery.diskqueue``; the on-disk format and crash guarantees are described there).

Both hand records out in the order they were put (``get``) and forget them only when
told the record is done (``ack``); the space a record takes counts against ``max_bytes``
until then, so a full queue refuses new data (``QueueFull``, a ``Backpressure``) instead
of dropping anything. Several consumers may take records at once.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

from errorgate.errors import Backpressure
from errorgate.signals import ExportRequest, Signal

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct("<IIBI")
HEADER_SIZE = RECORD_HEADER.size
SIGNAL_BY_CODE = (Signal.TRACES, Signal.LOGS, Signal.METRICS)
SIGNAL_CODE = {s: i for i, s in enumerate(SIGNAL_BY_CODE)}
_NOBODY_WAITS = 1 << 62


class QueueFull(Backpressure):
    """The queue has no room for the record (nothing was written)."""


class QueueClosed(Backpressure):
    """The queue is shutting down and accepts nothing more."""


class QueueInUse(RuntimeError):
    """The queue directory is locked by another open queue."""


@dataclass(frozen=True)
class QueueRecord:
    seq: int
    signal: Signal
    items: int
    size: int  # what the record counts against max_bytes
    data: bytes | None = None  # serialized request (persistent queue)
    request: ExportRequest | None = None  # the request object (memory queue)
    corrupt: bool = False  # the at-rest codec refused it (tampered / wrong key); payload unavailable

    def to_request(self) -> ExportRequest:
        if self.request is not None:
            return self.request
        if self.data is None:
            raise ValueError("record has no payload")
        return self.signal.parse(self.data)


class ExportQueue(ABC):
    """Ordered, bounded, acknowledged queue of export requests."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        lock = threading.RLock()  # reentrant: PersistentQueue.close calls the base close under it
        # Two conditions on one lock: ``put`` wakes a single consumer and ``ack`` wakes only
        # ``wait_empty`` callers, so idle consumers are not woken (and put back to sleep) per record.
        self._cond = threading.Condition(lock)
        self._drained = threading.Condition(lock)
        # A third one for consumers gathering a batch (``wait_backlog``): woken only once enough
        # items wait, not by every put.
        self._backlog = threading.Condition(lock)
        self._backlog_want = _NOBODY_WAITS  # smallest backlog (items) a waiting consumer asked for
        self._unread_items = 0  # items in records put and not yet handed out
        self._closed = False
        self._items = 0
        self._bytes = 0
        self._outstanding = 0  # records put and not yet acknowledged

    # -------------------------------------------------------------- interface

    @abstractmethod
    def put(
        self, signal: Signal, request: ExportRequest | None, items: int, data: bytes | None = None
    ) -> None:
        """Add a record (``data`` = ``request`` serialized, if the caller already has it; then
        ``request`` may be None, parsed from ``data`` only if an exporter reads it).
        Raises QueueFull / QueueClosed; on return the record is durable for a persistent queue."""

    @abstractmethod
    def get(self, timeout: float) -> QueueRecord | None:
        """Next record not yet handed out, in put order; None after ``timeout`` or when closed."""

    @abstractmethod
    def ack(self, seq: int) -> None:
        """The record is done with (exported or dead-lettered): free its space."""

    @abstractmethod
    def waiting(self) -> int:
        """Records put and not yet handed out (a lock-free reading; may be a moment stale)."""

    def wait_backlog(self, items: int, timeout: float) -> bool:
        """Block until at least ``items`` items wait to be handed out or ``timeout`` passed (then
        ``get`` tells what there is). False at once when the queue is closed."""
        with self._cond:
            if self._closed:
                return False
            if self._unread_items < items and timeout > 0:
                self._backlog_want = min(self._backlog_want, items)
                self._backlog.wait(timeout)
            return True

    def has_room(self, nbytes: int) -> bool:
        """Whether a request of ``nbytes`` serialized bytes would fit now."""
        # No lock: every receiver thread asks this per request, and a reading that is one
        # put or ack stale is harmless (``put`` checks again under the lock).
        return not self._closed and self._bytes + nbytes + HEADER_SIZE <= self.max_bytes

    @property
    def items(self) -> int:
        return self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return self._outstanding

    def wait_empty(self, timeout: float) -> bool:
        """Block until every record was acknowledged (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.5))
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._drained.notify_all()
            self._backlog.notify_all()

    def _arrived(self, items: int) -> None:
        """Called under the lock after a put: wake one idle consumer, and the gathering ones once
        the backlog they wait for is there."""
        self._unread_items += items
        self._cond.notify()
        if self._unread_items >= self._backlog_want:
            self._backlog_want = _NOBODY_WAITS  # a consumer still short of items asks again
            self._backlog.notify_all()

    def _acked(self) -> None:
        """Called under the lock after an acknowledgement."""
        if not self._outstanding:
            self._drained.notify_all()

    # -------------------------------------------------------------- helpers

    def _check_room(self, size: int) -> None:
        if self._closed:
            raise QueueClosed("exporter queue is shutting down", retry_after=5.0)
        if self._bytes + size > self.max_bytes:
            if size > self.max_bytes:
                raise QueueFull(
                    f"request of {size} bytes is larger than the whole sending queue "
                    f"(sending_queue.max_size_mib = {self.max_bytes / 1048576:g})",
                    retry_after=30.0,
                )
            raise QueueFull("exporter sending queue is full", retry_after=1.0)


class MemoryQueue(ExportQueue):
    """In-process queue: what is in it is lost when the process ends."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes)
        self._waiting: deque[QueueRecord] = deque()
        self._inflight: dict[int, QueueRecord] = {}
        self._seq = 0

    def put(
        self, signal: Signal, request: ExportRequest | None, items: int, data: bytes | None = None
    ) -> None:
        # Counted like a persistent record (frame header included) so both bound the same way.
        size = HEADER_SIZE + (len(data) if data is not None else required_request(request).ByteSize())
        with self._cond:
            self._check_room(size)
            self._seq += 1
            self._waiting.append(QueueRecord(self._seq, signal, items, size, data=data, request=request))
            self._items += items
            self._bytes += size
            self._outstanding += 1
            self._arrived(items)

    def waiting(self) -> int:
        return len(self._waiting)

    def get(self, timeout: float) -> QueueRecord | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._waiting:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return None
                self._cond.wait(left)
            record = self._waiting.popleft()
            self._unread_items -= record.items
            self._inflight[record.seq] = record
            return record

    def ack(self, seq: int) -> None:
        with self._cond:
            record = self._inflight.pop(seq, None)
            if record is None:
                return
            self._items -= record.items
            self._bytes -= record.size
            self._outstanding -= 1
            self._acked()


def required_request(request: ExportRequest | None) -> ExportRequest:
    if request is None:
        raise ValueError("a queue record needs its request or its bytes")
    return request
