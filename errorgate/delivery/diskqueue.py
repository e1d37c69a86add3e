"""The persistent sending queue (``errorgate.delivery.queue.PersistentQueue``).

The queue is a directory of segment files holding framed
records ``<u32 payload length><u32 crc32><u8 signal><u32 items><payload>`` where payload
is the serialized export request (through the at-rest codec when one is given). The
CRC covers signal, items and payload, so a torn or garbled record is recognised. A
record is written to the OS before ``put`` returns (``fsync=True`` also forces it to the
device). ``cursor`` holds the position up to which every record was acknowledged, in two
alternating CRC-checked slots (a torn slot write leaves the other, older one valid — cheaper
than a file rename per acknowledgement; the file is allocated at open, so writing a slot never
needs disk space); segments before it are deleted. After a crash the queue re-reads from the
cursor: records past it are delivered again (at-least-once), a torn last record (the ``put``
that never returned) is cut off, nothing else is lost.

A write that fails (ENOSPC, EIO) is cut back off the segment before ``put`` raises, so no torn
frame ever stands in front of a record acknowledged later; ``put`` raises
``StorageUnavailable`` and the client is asked to retry. Should a segment still hold
unreadable bytes in its middle (damage from outside), recovery skips exactly them: it looks
for the next frame whose checksum holds and keeps every record after it, and reports the
skipped bytes (WARNING and ``on_damage``).

Several consumers may take records at once; acknowledgements can arrive out of order,
so the cursor only advances over the contiguous acknowledged prefix.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errorgate.codec import BytesCodec, or_identity
from errorgate.delivery.queue import (
    HEADER_SIZE,
    RECORD_HEADER,
    SIGNAL_BY_CODE,
    SIGNAL_CODE,
    ExportQueue,
    QueueInUse,
    QueueRecord,
    required_request,
)
from errorgate.errors import StorageUnavailable
from errorgate.signals import ExportRequest, Signal

log = logging.getLogger("errorgate.queue")

_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor"
_SLOT = struct.Struct("<QQQI")  # generation, segment, offset, crc32 of the first three
_SLOT_SIZE = 32
# Upper bound on the memory that recently written records take while they wait to be read.
RECENT_MAX_BYTES = 8 * 1048576


@dataclass
class _Pending:
    segment: int
    end: int  # offset just past the record
    items: int
    size: int
    acked: bool = False


class PersistentQueue(ExportQueue):
    """Segment files in ``directory``; survives restarts and SIGKILL (see module docstring)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        codec: BytesCodec | None = None,
        *,
        fsync: bool = False,
        segment_bytes: int | None = None,
        on_damage: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(max_bytes)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        self._codec = or_identity(codec)
        self._fsync = fsync
        self._segment_bytes = segment_bytes or max(64 * 1024, min(16 * 1048576, max_bytes // 8))
        self._lengths: dict[int, int] = {}  # segment -> length of its valid records
        self._pending: dict[int, _Pending] = {}  # dispatched, not yet committed, by seq
        self._next_seq = 1  # assigned at dispatch
        self._commit_seq = 1
        self._unread = 0
        self._read_fds: dict[int, int] = {}
        # Records written by this process and not yet read, kept so that ``get`` usually needs no
        # disk read and no decode: (segment, offset, frame size, signal code, items, plain bytes).
        self._recent: deque[tuple[int, int, int, int, int, bytes]] = deque()
        self._recent_bytes = 0
        self._recent_max = min(RECENT_MAX_BYTES, max_bytes // 4)
        self._on_damage = on_damage
        self._cursor_fd = _open_cursor(self.directory / _CURSOR)
        self._cursor_gen = 0
        self._recover()
        self._write_seg = max(self._lengths, default=0) + 1
        self._lengths[self._write_seg] = 0
        self._wfd = os.open(self._seg_path(self._write_seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if not self._has_cursor:
            self._read_seg, self._read_off = min(self._lengths), 0

    # -------------------------------------------------------------- recovery

    def _seg_path(self, n: int) -> Path:
        return self.directory / f"{n:016d}{_SEGMENT_SUFFIX}"

    def _recover(self) -> None:
        segments = sorted(
            int(p.name[: -len(_SEGMENT_SUFFIX)])
            for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}")
            if p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
        )
        cur_seg, cur_off = self._read_cursor()
        self._has_cursor = False
        for n in segments:
            if n < cur_seg:
                self._seg_path(n).unlink(missing_ok=True)
                continue
            start = cur_off if n == cur_seg else 0
            valid_end, items, size, count = self._recover_segment(n, start, last=n == segments[-1])
            if count == 0 and not self._has_cursor:
                # Nothing unread here: the segment is fully consumed.
                self._seg_path(n).unlink(missing_ok=True)
                continue
            self._lengths[n] = valid_end
            if not self._has_cursor:
                self._read_seg, self._read_off, self._has_cursor = n, start, True
            self._items += items
            self._bytes += size
            self._unread += count
            self._unread_items += items
        self._outstanding = self._unread
        if self._has_cursor:
            self._write_cursor(self._read_seg, self._read_off)

    def _recover_segment(self, n: int, start: int, last: bool) -> tuple[int, int, int, int]:
        """Scan segment ``n`` from ``start``; (valid length, items, bytes, records) after making
        it readable end to end: a torn tail of the last segment (the ``put`` that never returned)
        is cut off, unreadable bytes anywhere else are skipped and reported, never what follows."""
        valid_end, items, size, count = self._scan(n, start)
        file_len = self._seg_path(n).stat().st_size
        if valid_end >= file_len:
            return valid_end, items, size, count
        resume = _next_frame(self._seg_path(n), valid_end)
        if resume is None and last:
            log.info(
                "queue %s: segment %d: cut %d bytes of an incomplete last record (never acknowledged)",
                self.directory,
                n,
                file_len - valid_end,
            )
            _truncate(self._seg_path(n), valid_end)
            return valid_end, items, size, count
        skipped = (resume if resume is not None else file_len) - valid_end
        log.warning(
            "queue %s: segment %d: %d unreadable bytes at offset %d skipped; the records after them are kept",
            self.directory,
            n,
            skipped,
            valid_end,
        )
        if self._on_damage is not None:
            self._on_damage(skipped)
        _cut_out(self._seg_path(n), valid_end, valid_end + skipped)
        return self._recover_segment(n, start, last)

    def _read_cursor(self) -> tuple[int, int]:
        raw = os.pread(self._cursor_fd, 2 * _SLOT_SIZE, 0)
        best: tuple[int, int, int] | None = None
        for i in range(2):
            chunk = raw[i * _SLOT_SIZE : i * _SLOT_SIZE + _SLOT.size]
            if len(chunk) < _SLOT.size:
                continue
            gen, seg, off, crc = _SLOT.unpack(chunk)
            if zlib.crc32(chunk[:24]) == crc and (best is None or gen > best[0]):
                best = (gen, seg, off)
        if best is None:
            if raw.strip(b"\0"):
                log.warning("queue %s: unreadable cursor, re-reading every segment", self.directory)
            return 0, 0
        self._cursor_gen = best[0]
        return best[1], best[2]

    def _scan(self, n: int, start: int) -> tuple[int, int, int, int]:
        """(end of the last valid record, items, bytes, records) from ``start``."""
        items = size = count = 0
        with open(self._seg_path(n), "rb") as f:
            f.seek(start)
            pos = start
            while True:
                header = f.read(HEADER_SIZE)
                if len(header) < HEADER_SIZE:
                    break
                length, crc, code, n_items = RECORD_HEADER.unpack(header)
                payload = f.read(length)
                if (
                    len(payload) < length
                    or code >= len(SIGNAL_BY_CODE)
                    or _crc(code, n_items, payload) != crc
                ):
                    break
                pos += HEADER_SIZE + length
                items += n_items
                size += HEADER_SIZE + length
                count += 1
        return pos, items, size, count

    def _write_cursor(self, segment: int, offset: int) -> None:
        self._cursor_gen += 1
        head = struct.pack("<QQQ", self._cursor_gen, segment, offset)
        slot = head + struct.pack("<I", zlib.crc32(head))
        os.pwrite(self._cursor_fd, slot, (self._cursor_gen % 2) * _SLOT_SIZE)
        if self._fsync:
            os.fdatasync(self._cursor_fd)

    # -------------------------------------------------------------- queue

    def put(
        self, signal: Signal, request: ExportRequest | None, items: int, data: bytes | None = None
    ) -> None:
        plain = required_request(request).SerializeToString() if data is None else data
        payload = self._codec.encode(plain)
        code = SIGNAL_CODE[signal]
        header = RECORD_HEADER.pack(len(payload), _crc(code, items, payload), code, items)
        size = HEADER_SIZE + len(payload)
        with self._cond:
            self._check_room(size)
            if self._lengths[self._write_seg] >= self._segment_bytes:
                self._rotate()
            self._write(header, payload)
            self._remember(self._write_seg, self._lengths[self._write_seg], size, code, items, plain)
            self._lengths[self._write_seg] += size
            self._items += items
            self._bytes += size
            self._unread += 1
            self._outstanding += 1
            self._arrived(items)

    def _write(self, header: bytes, payload: bytes) -> None:
        """Append one frame, or leave the segment exactly as it was and raise StorageUnavailable."""
        try:
            _write_frame(self._wfd, header, payload)
            if self._fsync:
                os.fsync(self._wfd)
        except OSError as e:
            self._undo_write()
            raise StorageUnavailable(
                f"sending queue cannot write to {self.directory} ({errno.errorcode.get(e.errno or 0, 'EIO')})",
                retry_after=2.0,
            ) from e

    def _undo_write(self) -> None:
        """Cut a partly written frame off the segment, so the next record follows the last good
        one. Should even that fail, later records go to a new segment and recovery finds the torn
        frame's bytes, skips them and keeps what follows."""
        try:
            os.ftruncate(self._wfd, self._lengths[self._write_seg])
        except OSError:
            log.error(
                "queue %s: cannot cut a failed write off its segment; starting a new one", self.directory
            )
            try:
                self._rotate()
            except OSError:
                pass  # the disk refuses even that: the next put tries again

    def _rotate(self) -> None:
        os.close(self._wfd)
        self._write_seg += 1
        self._lengths[self._write_seg] = 0
        self._wfd = os.open(self._seg_path(self._write_seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def waiting(self) -> int:
        return self._unread

    def get(self, timeout: float) -> QueueRecord | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._unread:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    return None
                self._cond.wait(left)
            while self._read_off >= self._lengths[self._read_seg]:
                self._read_seg = min(n for n in self._lengths if n > self._read_seg)
                self._read_off = 0
            cached = self._recalled(self._read_seg, self._read_off)
            if cached is not None:
                size, code, items, plain = cached
            else:
                fd = self._read_fd(self._read_seg)
                header = os.pread(fd, HEADER_SIZE, self._read_off)
                length, _crc_value, code, items = RECORD_HEADER.unpack(header)
                payload = os.pread(fd, length, self._read_off + HEADER_SIZE)
                size = HEADER_SIZE + length
            self._read_off += size
            self._unread -= 1
            self._unread_items -= items
            seq = self._next_seq
            self._next_seq += 1
            self._pending[seq] = _Pending(self._read_seg, self._read_off, items, size)
        if cached is not None:
            return QueueRecord(seq, SIGNAL_BY_CODE[code], items, size, data=plain)
        if code >= len(SIGNAL_BY_CODE):  # recovery makes this unreachable; never crash a consumer on it
            return QueueRecord(seq, SIGNAL_BY_CODE[0], items, size, data=None, corrupt=True)
        try:
            data: bytes | None = self._codec.decode(payload)
            corrupt = False
        except ValueError:
            data, corrupt = None, True
        return QueueRecord(seq, SIGNAL_BY_CODE[code], items, size, data=data, corrupt=corrupt)

    def _remember(self, segment: int, offset: int, size: int, code: int, items: int, plain: bytes) -> None:
        """Keep what was just written for ``get``, within a memory bound (called under the lock)."""
        self._recent.append((segment, offset, size, code, items, plain))
        self._recent_bytes += len(plain)
        while self._recent_bytes > self._recent_max:
            self._recent_bytes -= len(self._recent.popleft()[5])

    def _recalled(self, segment: int, offset: int) -> tuple[int, int, int, bytes] | None:
        """The record at (segment, offset) if still remembered (called under the lock, in read order)."""
        recent = self._recent
        while recent and (recent[0][0], recent[0][1]) < (segment, offset):
            self._recent_bytes -= len(recent.popleft()[5])
        if not recent or recent[0][0] != segment or recent[0][1] != offset:
            return None
        _seg, _off, size, code, items, plain = recent.popleft()
        self._recent_bytes -= len(plain)
        return size, code, items, plain

    def _read_fd(self, n: int) -> int:
        fd = self._read_fds.get(n)
        if fd is None:
            for old in [k for k in self._read_fds if k < n]:
                os.close(self._read_fds.pop(old))
            fd = self._read_fds[n] = os.open(self._seg_path(n), os.O_RDONLY)
        return fd

    def ack(self, seq: int) -> None:
        with self._cond:
            pending = self._pending.get(seq)
            if pending is None or pending.acked:
                return
            pending.acked = True
            self._items -= pending.items
            self._bytes -= pending.size
            self._outstanding -= 1
            committed: _Pending | None = None
            while (head := self._pending.get(self._commit_seq)) is not None and head.acked:
                committed = self._pending.pop(self._commit_seq)
                self._commit_seq += 1
            if committed is not None:
                self._write_cursor(committed.segment, committed.end)
                for n in [k for k in self._lengths if k < committed.segment]:
                    del self._lengths[n]
                    fd = self._read_fds.pop(n, None)
                    if fd is not None:
                        os.close(fd)
                    self._seg_path(n).unlink(missing_ok=True)
            self._acked()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            super().close()
            os.close(self._wfd)
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            os.close(self._cursor_fd)
            os.close(self._lock_fd)  # releases the directory lock


def _open_cursor(path: Path) -> int:
    """The cursor file, allocated to its two slots at once: a slot write then never needs space
    (an acknowledgement must not fail on a full disk)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if os.fstat(fd).st_size < 2 * _SLOT_SIZE:
        try:
            os.posix_fallocate(fd, 0, 2 * _SLOT_SIZE)
        except OSError:
            os.close(fd)
            raise
    return fd


def _next_frame(path: Path, offset: int) -> int | None:
    """The first offset after ``offset`` where a whole frame with a good checksum starts."""
    data = path.read_bytes()
    for pos in range(offset + 1, len(data) - HEADER_SIZE + 1):
        length, crc, code, items = RECORD_HEADER.unpack_from(data, pos)
        end = pos + HEADER_SIZE + length
        if (
            code < len(SIGNAL_BY_CODE)
            and end <= len(data)
            and _crc(code, items, data[pos + HEADER_SIZE : end]) == crc
        ):
            return pos
    return None


def _truncate(path: Path, length: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(length)


def _cut_out(path: Path, start: int, end: int) -> None:
    """Rewrite ``path`` without bytes ``start:end`` (a new file renamed over it: a crash leaves
    either version whole)."""
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data[:start])
        f.write(data[end:])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock_directory(directory: Path) -> int:
    """Two processes appending to one queue would interleave records: refuse the second."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise QueueInUse(
            f"sending_queue.storage: {directory} is in use by another errorgate process (or another exporter)"
        ) from None
    return fd


def _crc(code: int, items: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<BI", code, items)))


def _write_frame(fd: int, header: bytes, payload: bytes) -> None:
    # One gathered write: no copy of the payload to put the header in front of it.
    written = os.writev(fd, (header, payload))
    if written < len(header) + len(payload):  # a short write (rare): finish it
        _write_all(fd, (header + payload)[written:])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
