"""What the trace assembler keeps in its ``HoldStore``: one record per batch it held spans of.

A record is written before ``process`` returns (the sender gets its ack after): under the key
``<seq hex>.<arrival ms hex>.<tenant hex>`` the serialized request of the held spans — usually
the received batch's bytes as they are, so holding a batch costs one store write and no
per-trace encoding. The arrival time rides in the key so a restart knows how long the spans
have waited; the tenant is hex-encoded so no tenant name can break the key format.

Traces of one batch may be released at different times (a trace that began in an earlier
batch leaves with that batch's traces). Once a release is durably queued (``settle``, called
from ``Output.on_persisted``) a record with no held trace left is deleted; otherwise each
released trace gets a tombstone ``<record key>!<trace id hex>`` (empty value) so that a restart
reloads only the traces still held — the released ones were delivered and must not come back.
Tombstones go with their record.

Records of the earlier per-trace format (``<trace id hex>.<seq>.<ms>.<tenant>``, one trace's
spans) read the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from errorgate.pipeline.hold.store import HoldStore

if TYPE_CHECKING:
    from errorgate.component import ComponentContext


class HoldStoreLike(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None: ...
    def delete(self, keys: Iterable[str]) -> None: ...
    def items(self) -> Iterator[tuple[str, bytes]]: ...
    def close(self) -> None: ...


class Record:
    """One persisted batch: its key and how many held traces still have spans in it."""

    __slots__ = ("first_seen", "key", "pending", "tenant", "tombstones")

    def __init__(self, key: str, first_seen: float, tenant: str) -> None:
        self.key = key
        self.first_seen = first_seen
        self.tenant = tenant
        self.pending = 0  # held traces with spans in this record (not yet settled)
        self.tombstones: list[str] = []


class Records:
    def __init__(self, store: HoldStoreLike | None) -> None:
        self._store = store
        self._seq = 0
        # settle() runs on whichever thread queued a release, outside the pipeline lock.
        self._lock = threading.Lock()
        self._reloaded: list[Record] = []
        self._orphans: list[str] = []

    def new(self, first_seen: float, tenant: str) -> Record:
        self._seq += 1
        return Record(f"{self._seq:x}.{int(first_seen * 1000):x}.{tenant.encode().hex()}", first_seen, tenant)

    def persist(self, record: Record, data: bytes) -> None:
        """Write a batch's held spans durably (before ``process`` returns)."""
        if self._store is not None:
            self._store.put(record.key, data)

    def settle(self, released: dict[Record, list[bytes]]) -> None:
        """The traces ``released`` (record -> trace ids) are durably queued: forget their spans."""
        store = self._store
        if store is None:
            return
        deletes: list[str] = []
        tombstones: list[str] = []
        with self._lock:
            for record, tids in released.items():
                record.pending -= len(tids)
                if record.pending <= 0:
                    deletes.append(record.key)
                    deletes.extend(record.tombstones)
                    record.tombstones = []
                else:
                    keys = [f"{record.key}!{tid.hex()}" for tid in tids]
                    record.tombstones.extend(keys)
                    tombstones.extend(keys)
            # Tombstones before deletes: either order is safe, this one never resurrects a trace.
            if tombstones:
                store.put_many([(key, b"") for key in tombstones])
            if deletes:
                store.delete(deletes)

    # ------------------------------------------------------------------ restart

    def reload(self) -> Iterator[tuple[Record, bytes, set[bytes]]]:
        """(record, held data, trace ids already released from it) of every stored record,
        by arrival; call ``forget_empty`` after holding them."""
        if self._store is None:
            return
        found: list[tuple[float, int, Record, bytes]] = []
        done: dict[str, set[bytes]] = {}
        tombstone_keys: dict[str, list[str]] = {}
        for key, data in self._store.items():
            record_key, bang, tid_hex = key.partition("!")
            if bang:
                try:
                    tid = bytes.fromhex(tid_hex)
                except ValueError:
                    continue  # not ours; leave it alone
                done.setdefault(record_key, set()).add(tid)
                tombstone_keys.setdefault(record_key, []).append(key)
                continue
            parsed = parse_key(key)
            if parsed is None:
                continue  # not ours; leave it alone
            seq, first_seen, tenant = parsed
            found.append((first_seen, seq, Record(key, first_seen, tenant), data))
            self._seq = max(self._seq, seq)
        found.sort(key=lambda x: (x[0], x[1]))
        for _, _, record, data in found:
            record.tombstones = tombstone_keys.pop(record.key, [])
            self._reloaded.append(record)
            yield record, data, done.get(record.key, set())
        self._orphans = [key for keys in tombstone_keys.values() for key in keys]

    def forget_empty(self) -> None:
        """Delete reloaded records with nothing left to hold, and tombstones without a record."""
        deletes = list(self._orphans)
        for record in self._reloaded:
            if record.pending <= 0:
                deletes.append(record.key)
                deletes.extend(record.tombstones)
        self._reloaded, self._orphans = [], []
        if deletes and self._store is not None:
            self._store.delete(deletes)


def parse_key(key: str) -> tuple[int, float, str] | None:
    """(seq, arrival time, tenant) of a record key (either format), or None if not one."""
    parts = key.split(".")
    if len(parts) == 4:  # the earlier per-trace format: the trace id first
        parts = parts[1:]
    if len(parts) != 3:
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16) / 1000.0, bytes.fromhex(parts[2]).decode()
    except ValueError:
        return None


def open_store(context: ComponentContext) -> HoldStoreLike:
    """The held items' durable store under the component's state directory."""
    directory = context.state_dir() / "assembly"
    directory.mkdir(parents=True, exist_ok=True)
    telemetry = context.telemetry
    return HoldStore(
        directory,
        context.extensions.at_rest_codec(),
        on_write_error=lambda error: telemetry.record_write_error("hold", error),
    )
