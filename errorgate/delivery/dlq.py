"""Dead-letter store: batches errorgate could not deliver or process, kept for inspection and replay.

One entry is two files in the store directory: ``<id>.bin`` (the serialized export request,
through the at-rest codec) and ``<id>.json`` (metadata only: signal, counts, reason, source,
a PII-free detail — never payload values, so ``dlq list`` is safe to show). The payload is
written and fsynced first and the metadata is renamed into place last, so an entry exists
exactly when both are complete; a crash in between leaves an orphan ``.bin`` that the next
start removes.

The store is bounded (``service.dead_letter``): past ``max_size_mib`` or ``max_age`` the oldest
entries are removed, counted (``errorgate_dead_letter_expired_items_total{limit}``), logged and
audited (``on_expired``: the gateway hands it to its extensions, so a keyring extension writes a
``dead_letter_expired`` event to the signed audit log -- the core never imports governance).
It also gives way to the queue: when its directory falls below the free-space floor
(``service.disk.min_free_mib``), older entries are removed (``limit="disk_space"``) until the
floor is met again, so dead letters never take the room that live, acknowledged data needs. A write that fails leaves no partial entry
and raises ``StorageUnavailable``: whatever was to be dead-lettered is refused or kept, not lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from errorgate.codec import BytesCodec, or_identity
from errorgate.delivery.disk import statvfs_free
from errorgate.errors import StorageUnavailable
from errorgate.signals import ExportRequest, Signal, count_items
from errorgate.telemetry import Telemetry

log = logging.getLogger(__name__)

_MAX_DETAIL = 500
_MAX_AUDITED_IDS = 100  # entry ids named per audit event (the count is always exact)
# The config key behind each expiry reason (the metric's ``limit`` label), for the log line.
_LIMIT_KEYS = {
    "max_size_mib": "service.dead_letter.max_size_mib",
    "max_age": "service.dead_letter.max_age",
    "disk_space": "service.disk.min_free_mib",
}


@dataclass(frozen=True)
class DeadLetterEntry:
    id: str
    time: float
    signal: Signal
    reason: str
    detail: str
    source: str
    items: int
    size: int

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["signal"] = self.signal.value
        return out


class DeadLetterStore:
    def __init__(
        self,
        directory: Path,
        telemetry: Telemetry,
        codec: BytesCodec | None = None,
        *,
        max_bytes: int | None = None,
        max_age: float = 0.0,
        min_free_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        free_bytes: Callable[[Path], int] | None = None,
        on_expired: Callable[[Mapping[str, object]], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._telemetry = telemetry
        self._codec = or_identity(codec)
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._free_bytes = free_bytes or statvfs_free
        self._on_expired = on_expired
        self._cleanup()
        # Oldest first (ids start with the time): id -> (bytes on disk, signal, items).
        self._sizes: dict[str, tuple[int, str, int]] = self._scan_sizes()
        self._total = sum(size for size, _, _ in self._sizes.values())
        self._telemetry.dead_letter_bytes.set(self._total)
        self.expire()

    def _cleanup(self) -> None:
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for payload in self.directory.glob("*.bin"):
            if not payload.with_suffix(".json").exists():
                payload.unlink(missing_ok=True)

    def put(self, signal: Signal, request: ExportRequest, *, reason: str, detail: str, source: str) -> str:
        """Store ``request`` durably (fsynced before return); returns the entry id."""
        now = self._clock()
        entry_id = f"{int(now * 1000):013d}-{uuid.uuid4().hex[:12]}"
        payload = self._codec.encode(request.SerializeToString())
        items = count_items(request)
        entry = DeadLetterEntry(
            id=entry_id,
            time=now,
            signal=signal,
            reason=reason,
            detail=detail[:_MAX_DETAIL],
            source=source,
            items=items,
            size=len(payload),
        )
        meta = json.dumps(entry.to_dict()).encode()
        try:
            _write_durably(self.directory / f"{entry_id}.bin", payload)
            _write_durably(self.directory / f"{entry_id}.json", meta)
            _fsync_dir(self.directory)
        except OSError as e:
            self._unwrite(entry_id)
            self._telemetry.record_write_error("dead_letter", e)
            raise StorageUnavailable(
                f"dead-letter store cannot write to {self.directory} ({type(e).__name__})", retry_after=2.0
            ) from e
        with self._lock:
            self._sizes[entry_id] = (len(payload) + len(meta), signal.value, items)
            self._total += len(payload) + len(meta)
        self._telemetry.record_dead_lettered(signal.value, reason, items)
        self.expire()
        self.give_way(keep=entry_id)
        log.warning(
            "dead-lettered %d %s item(s): reason=%s source=%s entry=%s",
            items,
            signal.value,
            reason,
            source,
            entry_id,
        )
        return entry_id

    def expire(self) -> None:
        """Remove the oldest entries past ``max_age`` or while over ``max_bytes``; counted, logged."""
        now = self._clock()
        removed: dict[str, _Removed] = {}
        while True:
            with self._lock:
                oldest = next(iter(self._sizes), None)
                if oldest is None:
                    break
                too_old = self.max_age > 0 and _entry_time(oldest) < now - self.max_age
                too_big = self.max_bytes is not None and self._total > self.max_bytes
                if not (too_old or too_big):
                    break
            self._expire_one(oldest, "max_age" if too_old else "max_size_mib", removed)
        self._expired(removed)

    def give_way(self, keep: str | None = None) -> None:
        """Below the disk floor, remove the oldest entries (never ``keep``, the one just
        written) until the floor is met: the queue's live data comes before dead letters."""
        if self.min_free_bytes <= 0:
            return
        removed: dict[str, _Removed] = {}
        while self._below_floor():
            with self._lock:
                oldest = next(iter(self._sizes), None)
            if oldest is None or oldest == keep:
                break
            self._expire_one(oldest, "disk_space", removed)
        self._expired(removed)

    def _below_floor(self) -> bool:
        try:
            return self._free_bytes(self.directory) < self.min_free_bytes
        except OSError:
            return False  # unreadable free space: the disk guard reports it; keep the entries

    def _expire_one(self, entry_id: str, limit: str, removed: dict[str, _Removed]) -> None:
        found = self.remove(entry_id)
        if found is None:
            return
        _size, signal, items = found
        self._telemetry.child(self._telemetry.dead_letter_expired, signal, limit).inc(items)
        tally = removed.setdefault(limit, _Removed())
        tally.ids.append(entry_id)
        tally.items[signal] = tally.items.get(signal, 0) + items

    def _expired(self, removed: dict[str, _Removed]) -> None:
        """One log line and one audit event per limit and call, not per entry: under disk
        pressure hundreds go at once."""
        self._telemetry.dead_letter_bytes.set(self._total)
        for limit, tally in removed.items():
            entries, items = len(tally.ids), sum(tally.items.values())
            log.warning(
                "dead-letter store: %d oldest entr%s (%d item(s)) removed by %s",
                entries,
                "y" if entries == 1 else "ies",
                items,
                _LIMIT_KEYS[limit],
            )
            if self._on_expired is not None:
                self._on_expired(
                    {
                        "event": "dead_letter_expired",
                        "limit": limit,
                        "config_key": _LIMIT_KEYS[limit],
                        "entries": entries,
                        "items": dict(sorted(tally.items.items())),
                        "entry_ids": tally.ids[:_MAX_AUDITED_IDS],
                    }
                )

    def _scan_sizes(self) -> dict[str, tuple[int, str, int]]:
        sizes: dict[str, tuple[int, str, int]] = {}
        for entry in self.list():
            try:
                size = sum((self.directory / f"{entry.id}{s}").stat().st_size for s in (".bin", ".json"))
            except OSError:
                continue
            sizes[entry.id] = (size, entry.signal.value, entry.items)
        return sizes

    def _unwrite(self, entry_id: str) -> None:
        """Remove what a failed ``put`` left (metadata first, as ``remove`` does)."""
        for name in (f"{entry_id}.json", f"{entry_id}.json.tmp", f"{entry_id}.bin", f"{entry_id}.bin.tmp"):
            try:
                (self.directory / name).unlink(missing_ok=True)
            except OSError:
                pass

    def list(self) -> list[DeadLetterEntry]:
        entries = []
        for meta in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(meta.read_text())
                entries.append(
                    DeadLetterEntry(
                        id=data["id"],
                        time=float(data["time"]),
                        signal=Signal(data["signal"]),
                        reason=data["reason"],
                        detail=data["detail"],
                        source=data["source"],
                        items=int(data["items"]),
                        size=int(data["size"]),
                    )
                )
            except (OSError, ValueError, KeyError) as e:
                log.warning("dead-letter store: unreadable entry %s (%s)", meta.name, type(e).__name__)
        return entries

    def get(self, entry_id: str) -> DeadLetterEntry:
        for entry in self.list():
            if entry.id == entry_id:
                return entry
        raise KeyError(f"no dead-letter entry with id {entry_id!r}")

    def load(self, entry_id: str) -> tuple[Signal, ExportRequest]:
        """The entry's request; KeyError if it does not exist, ValueError if the codec refuses it."""
        _check_id(entry_id)
        entry = self.get(entry_id)
        try:
            raw = (self.directory / f"{entry_id}.bin").read_bytes()
        except FileNotFoundError:
            raise KeyError(f"dead-letter entry {entry_id!r} has no payload") from None
        try:
            return entry.signal, entry.signal.parse(self._codec.decode(raw))
        except DecodeError:
            raise ValueError(
                f"dead-letter entry {entry_id!r}: payload does not decode (wrong codec?)"
            ) from None

    def remove(self, entry_id: str) -> tuple[int, str, int] | None:
        """Delete an entry; its (bytes, signal, items) as counted by this store, if it knew it."""
        _check_id(entry_id)
        with self._lock:
            # Metadata first: an entry without metadata is not an entry, a stray payload is cleaned up.
            (self.directory / f"{entry_id}.json").unlink(missing_ok=True)
            (self.directory / f"{entry_id}.bin").unlink(missing_ok=True)
            found = self._sizes.pop(entry_id, None)
            if found is not None:
                self._total -= found[0]
        self._telemetry.dead_letter_bytes.set(self._total)
        return found


@dataclass
class _Removed:
    """What one expiry pass removed under one limit."""

    ids: list[str] = field(default_factory=list)
    items: dict[str, int] = field(default_factory=dict)  # by signal


def _entry_time(entry_id: str) -> float:
    """When an entry was written: its id starts with the time in milliseconds."""
    try:
        return int(entry_id.split("-", 1)[0]) / 1000.0
    except ValueError:
        return 0.0


def _check_id(entry_id: str) -> None:
    if not entry_id or "/" in entry_id or entry_id.startswith(".") or "\\" in entry_id:
        raise KeyError(f"not a dead-letter entry id: {entry_id!r}")


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
