"""Durable key-value store for items a processor holds back (e.g. the tail-sampling buffer).

An append-only log of framed records ``<u32 length><u32 crc32><payload>``; payload (through
the at-rest codec) is one of
- ``b"P" + <u16 key length> + key + data`` (one ``put``),
- ``b"M" + (<u16 key length> <u32 data length> key data)*`` (one ``put_many``: a whole batch
  in one frame, one codec call and one write),
- ``b"D" + keys joined by \\n``.
Every ``put``/``put_many``/``delete`` is written to the OS before it returns, so the held items
survive a SIGKILL; a torn last record (the call that never returned) is ignored on reopen.

The log is split in segments: records are appended to ``hold.log``; past ``segment_bytes`` it is
sealed (renamed ``hold-<n>.log``) and a new one started. Held items are short-lived, so a sealed
segment soon holds nothing live and is deleted without being read — disk use stays bounded with
no rewriting in the common case. Segments go oldest first (a later segment may hold the delete
records of an earlier one's puts, so it must not disappear first); when an old segment still
holds a few live items while the sealed segments add up to more than twice the live size (plus
slack), those items are copied forward into ``hold.log`` and the old segment is deleted.

Values are not kept in memory: the caller holds what it put (that is why it holds items), and a
second copy here would double the memory of a full buffer. Only keys, sizes and segment numbers
are kept; ``items`` and copying forward read values back from disk.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from errorgate.codec import BytesCodec, or_identity
from errorgate.errors import StorageUnavailable

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_KEYLEN = struct.Struct("<H")
_ENTRY = struct.Struct("<HI")
_LOG = "hold.log"
_COMPACT_SLACK = 4 * 1048576
SEGMENT_BYTES = 4 * 1048576

Apply = Callable[[str, bytes | None], None]  # (key, value) for a put, (key, None) for a delete


class HoldStore:
    def __init__(
        self,
        directory: Path,
        codec: BytesCodec | None = None,
        *,
        fsync: bool = False,
        segment_bytes: int = SEGMENT_BYTES,
        on_write_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self._on_write_error = on_write_error
        self.directory.mkdir(parents=True, exist_ok=True)
        self._codec = or_identity(codec)
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._lock = threading.RLock()
        self._live: dict[str, tuple[int, int]] = {}  # key -> (segment, value size)
        self._live_bytes = 0
        self._per_segment: Counter[int] = Counter()  # live keys per segment
        self._sealed: dict[int, int] = {}  # sealed segment -> file size, oldest first
        self._path = self.directory / _LOG
        (self.directory / (_LOG + ".tmp")).unlink(missing_ok=True)  # left by an older version
        for seg in sorted(self._sealed_numbers()):
            self._current = seg
            self._sealed[seg] = self._replay(self._segment_path(seg), self._track, truncate=True)
        self._current = max(self._sealed, default=0) + 1
        self._log_bytes = self._replay(self._path, self._track, truncate=True)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._closed = False
        self._drop_dead_segments()

    # ------------------------------------------------------------------ reading

    def _sealed_numbers(self) -> list[int]:
        numbers = []
        for path in self.directory.glob("hold-*.log"):
            try:
                numbers.append(int(path.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return numbers

    def _segment_path(self, seg: int) -> Path:
        return self.directory / f"hold-{seg:08d}.log"

    def _replay(self, path: Path, apply: Apply, truncate: bool = False) -> int:
        """Feed every intact record of ``path`` to ``apply``; returns the intact prefix's length."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            try:
                _decode_body(self._codec.decode(payload), apply)
            except ValueError:
                log.warning(
                    "hold store %s: a record could not be decoded (wrong key?); skipped", self.directory
                )
            pos += _FRAME.size + length
        if truncate and pos < len(data):
            log.info(
                "hold store %s: ignoring %d bytes of an incomplete last record",
                self.directory,
                len(data) - pos,
            )
            with open(path, "r+b") as f:
                f.truncate(pos)
        return pos

    def _track(self, key: str, value: bytes | None) -> None:
        old = self._live.pop(key, None)
        if old is not None:
            self._live_bytes -= old[1] + len(key)
            self._per_segment[old[0]] -= 1
        if value is not None:
            self._live[key] = (self._current, len(value))
            self._live_bytes += len(value) + len(key)
            self._per_segment[self._current] += 1

    def _read_live(self, paths: Iterable[tuple[int, Path]]) -> dict[str, bytes]:
        """Values of live entries put in the given segments, in put order."""
        values: dict[str, bytes] = {}
        for seg, path in paths:

            def collect(key: str, value: bytes | None, seg: int = seg) -> None:
                values.pop(key, None)
                if value is not None and self._live.get(key, (None,))[0] == seg:
                    values[key] = value

            self._replay(path, collect)
        return values

    # ------------------------------------------------------------------ writing

    def _frame(self, body: bytes) -> bytes:
        payload = self._codec.encode(body)
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    def _append(self, frame: bytes) -> None:
        """Write one frame, or leave the log as it was and raise StorageUnavailable: a torn
        frame must never stand in front of records written after it."""
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(frame)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
        except OSError as e:
            if self._on_write_error is not None:
                self._on_write_error(e)
            try:
                os.ftruncate(self._fd, before)
            except OSError:
                log.error("hold log %s: cannot cut a failed write off; sealing it", self.directory)
                self._seal()
            raise StorageUnavailable(
                f"hold log cannot write to {self.directory} ({errno.errorcode.get(e.errno or 0, 'EIO')})",
                retry_after=2.0,
            ) from e
        self._log_bytes += len(frame)

    def put(self, key: str, data: bytes) -> None:
        """Hold ``data`` under ``key`` (replacing any previous value); durable on return."""
        raw_key = _check_key(key)
        frame = self._frame(b"P" + _KEYLEN.pack(len(raw_key)) + raw_key + data)
        with self._lock:
            self._ensure_open()
            self._append(frame)
            self._track(key, data)
            self._maintain()

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """``put`` of every item, written as one record with one write; durable on return."""
        items = list(items)
        if not items:
            return
        frame = self._frame(_many_body(items))
        with self._lock:
            self._ensure_open()
            self._append(frame)
            live, segment = self._live, self._current
            added = fresh = 0
            for key, data in items:
                if key in live:
                    self._track(key, data)
                    continue
                live[key] = (segment, len(data))
                added += len(data) + len(key)
                fresh += 1
            self._live_bytes += added
            self._per_segment[segment] += fresh
            self._maintain()

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._ensure_open()
            present = list(dict.fromkeys(k for k in keys if k in self._live))
            if not present:
                return
            self._append(self._frame(b"D" + "\n".join(present).encode()))
            live, per_segment = self._live, self._per_segment
            removed = 0
            for key in present:
                segment, size = live.pop(key)
                per_segment[segment] -= 1
                removed += size + len(key)
            self._live_bytes -= removed
            self._maintain()

    def items(self) -> Iterator[tuple[str, bytes]]:
        """Every live entry (read back from disk: meant for reloading after a restart)."""
        with self._lock:
            paths = [(seg, self._segment_path(seg)) for seg in self._sealed]
            snapshot = list(self._read_live([*paths, (self._current, self._path)]).items())
        return iter(snapshot)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def log_bytes(self) -> int:
        """Bytes on disk over all segments."""
        return self._log_bytes + sum(self._sealed.values())

    # ------------------------------------------------------------------ bounding the disk

    def _maintain(self) -> None:
        self._drop_dead_segments()
        if self._log_bytes >= self._segment_bytes:
            self._seal()
        if self._sealed and self.log_bytes > 2 * self._live_bytes + _COMPACT_SLACK:
            self.compact()

    def _seal(self) -> None:
        os.close(self._fd)
        os.replace(self._path, self._segment_path(self._current))
        self._sealed[self._current] = self._log_bytes
        self._current += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log_bytes = 0
        self._drop_dead_segments()

    def _drop_dead_segments(self) -> None:
        while self._sealed:
            oldest = next(iter(self._sealed))
            if self._per_segment[oldest] > 0:
                return
            self._segment_path(oldest).unlink(missing_ok=True)
            del self._sealed[oldest]
            del self._per_segment[oldest]

    def compact(self) -> None:
        """Copy the live entries of old segments forward into ``hold.log`` and delete the segments."""
        with self._lock:
            while self._sealed and self.log_bytes > 2 * self._live_bytes + _COMPACT_SLACK:
                oldest = next(iter(self._sealed))
                survivors = list(self._read_live([(oldest, self._segment_path(oldest))]).items())
                if survivors:
                    self._append(self._frame(_many_body(survivors)))
                    if not self._fsync:
                        os.fsync(self._fd)  # the copies must be on disk before the original goes
                    for key, value in survivors:
                        self._track(key, value)
                self._drop_dead_segments()
                if oldest in self._sealed:  # entries lost to a wrong key: nothing else can free it
                    self._segment_path(oldest).unlink(missing_ok=True)
                    del self._sealed[oldest]

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("hold store is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)


def _check_key(key: str) -> bytes:
    raw_key = key.encode()
    if len(raw_key) > 0xFFFF or "\n" in key:
        raise ValueError("hold store key must be under 64 KiB and contain no newline")
    return raw_key


def _many_body(items: list[tuple[str, bytes]]) -> bytes:
    parts = [b"M"]
    pack = _ENTRY.pack
    for key, data in items:
        raw_key = key.encode()
        if len(raw_key) > 0xFFFF or b"\n" in raw_key:
            _check_key(key)  # raises
        parts += (pack(len(raw_key), len(data)), raw_key, data)
    return b"".join(parts)


def _decode_body(body: bytes, apply: Apply) -> None:
    kind = body[:1]
    if kind == b"P":
        (klen,) = _KEYLEN.unpack_from(body, 1)
        apply(body[3 : 3 + klen].decode(), body[3 + klen :])
    elif kind == b"M":
        pos = 1
        while pos < len(body):
            klen, dlen = _ENTRY.unpack_from(body, pos)
            pos += _ENTRY.size
            key = body[pos : pos + klen].decode()
            pos += klen
            apply(key, body[pos : pos + dlen])
            pos += dlen
    elif kind == b"D":
        for key in body[1:].decode().split("\n"):
            apply(key, None)
