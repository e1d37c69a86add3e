"""Caches bounded twice: by entries and by an approximate byte budget, oldest evicted first.

A count alone bounds memory only when entries have one size. Telemetry values (log bodies,
resource bytes, whole-item signatures) run from a few bytes to the validation limit (64 KiB),
so 100,000 entries could be 6 MiB or 6 GiB. Each cache here charges an entry the ``len()`` of
the strings and bytes it holds plus a fixed overhead for everything else (the container's slot,
object headers, the tuple around a key), measured with tracemalloc on CPython 3.11 — see
``tests/test_caches.py``, which fills every cache with large unique values and checks the
traced memory against its budget. Charges are recomputed from the key on eviction, so nothing
per entry is stored for the accounting.

Where every entry has one size (sample's trace decisions, duplicate detection's digests, the
assembler's released trace ids), the entry count is already a byte bound: those hot paths keep
their plain ``OrderedDict``, and the tests pin the bytes per entry their documented bounds use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

MIB = 1024 * 1024

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Measured per-entry overheads (bytes beyond the payload's len()), rounded up: a dict's table
# doubles, and a table under churn (insert new, evict oldest) keeps holes until it is rebuilt.
DICT_KEY_TUPLE = 240  # dict slot + (str, bool) tuple + str header + queue slot (measured 156 + 8)
DICT_BYTES_KEY = 160  # dict slot + bytes header + queue slot (measured 85 + 8)


class ByteLRU(Generic[K, V]):
    """A least-recently-used map bounded by entries and by bytes (``cost(key, value)``).

    Not locked: callers that share one across threads hold their own lock (``get`` moves the
    entry, so even reads mutate)."""

    __slots__ = ("_cost", "_data", "bytes", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int, cost: Callable[[K, V], int]) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._cost = cost
        self._data: OrderedDict[K, V] = OrderedDict()
        self.bytes = 0

    def get(self, key: K) -> V | None:
        found = self._data.get(key)
        if found is not None:
            self._data.move_to_end(key)
        return found

    def peek(self, key: K) -> V | None:
        """The entry without refreshing it (it keeps its place in the eviction order)."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert (or replace and refresh) ``key``; an entry larger than the whole budget is not kept."""
        cost = self._cost(key, value)
        if self.max_entries <= 0 or cost > self.max_bytes:
            return
        data = self._data
        old = data.pop(key, None)
        if old is not None:
            self.bytes -= self._cost(key, old)
        data[key] = value
        self.bytes += cost
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            oldest, evicted = data.popitem(last=False)
            self.bytes -= self._cost(oldest, evicted)

    def pop(self, key: K) -> V | None:
        found = self._data.pop(key, None)
        if found is not None:
            self.bytes -= self._cost(key, found)
        return found

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class ByteFifoMap(Generic[K, V]):
    """A map bounded by entries and by bytes (``cost(key, value)``), oldest added evicted first.

    Readers use ``get`` and ``contains`` — the dict's own methods, lock-free, no Python frame —
    because maps like this are consulted for every value or resource of every batch; insertion
    order is kept in a deque beside the dict (8 bytes an entry: deleting from the front of a
    dict would make each later ``next(iter())`` skip the holes). ``put`` takes a lock, so puts
    from concurrent ``process`` calls keep the accounting exact. A key is never replaced."""

    __slots__ = ("_cost", "_data", "_lock", "_order", "bytes", "contains", "get", "max_bytes", "max_entries")

    def __init__(self, max_entries: int, max_bytes: int, cost: Callable[[K, V], int]) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._cost = cost
        self._data: dict[K, V] = {}
        self._order: deque[K] = deque()
        self._lock = threading.Lock()
        self.bytes = 0
        self.get: Callable[[K], V | None] = self._data.get
        self.contains: Callable[[K], bool] = self._data.__contains__

    def put(self, key: K, value: V) -> None:
        cost = self._cost(key, value)
        if self.max_entries <= 0 or cost > self.max_bytes:
            return
        with self._lock:
            data = self._data
            if key in data:
                return
            data[key] = value
            self._order.append(key)
            self.bytes += cost
            while len(data) > self.max_entries or self.bytes > self.max_bytes:
                oldest = self._order.popleft()
                self.bytes -= self._cost(oldest, data.pop(oldest))

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class ByteFifoSet(ByteFifoMap[K, None]):
    """A ``ByteFifoMap`` used as a set; an entry costs ``size(key) + overhead``. ``add`` runs
    for every new clean item of redact's memo, so it is written out here rather than passed
    through ``put`` and a cost closure (``size=len``, the default, is a C call)."""

    __slots__ = ("_overhead", "_size")

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        overhead: int,
        size: Callable[[K], int] = len,  # type: ignore[assignment]  # K is Sized wherever the default is used
    ) -> None:
        super().__init__(max_entries, max_bytes, lambda key, _: size(key) + overhead)
        self._size = size
        self._overhead = overhead

    def add(self, key: K) -> None:
        cost = self._size(key) + self._overhead
        if cost > self.max_bytes or self.max_entries <= 0:
            return
        data = self._data
        with self._lock:
            if key in data:
                return
            data[key] = None
            self._order.append(key)
            self.bytes += cost
            if len(data) > self.max_entries or self.bytes > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Oldest first until both bounds hold (the caller holds the lock)."""
        data, order, size, overhead = self._data, self._order, self._size, self._overhead
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            oldest = order.popleft()
            del data[oldest]
            self.bytes -= size(oldest) + overhead
