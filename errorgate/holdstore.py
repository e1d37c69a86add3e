"""Durable key-value store for items a processor holds back (e.g. the tail-sampling buffer).

An append-only log of framed records ``<u32 length><u32 crc32><payload>``; payload (through
the at-rest codec) is ``b"P" + <u16 key length> + key + data`` or ``b"D" + keys joined by \\n``.
Every ``put``/``delete`` is written to the OS before it returns, so the held items survive a
SIGKILL; a torn last record (the call that never returned) is ignored on reopen. The live
set is also kept in memory (it is what the processor holds anyway), which makes compaction
a rewrite of the live entries into a new file, atomically renamed over the log, whenever
the log grows past twice the live size (plus slack) — so disk use stays bounded.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from errorgate.codec import BytesCodec, or_identity

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_KEYLEN = struct.Struct("<H")
_LOG = "hold.log"
_COMPACT_SLACK = 4 * 1048576


class HoldStore:
    def __init__(self, directory: Path, codec: BytesCodec | None = None, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._codec = or_identity(codec)
        self._fsync = fsync
        self._lock = threading.RLock()  # compact() runs inside put/delete and on its own
        self._live: dict[str, bytes] = {}
        self._live_bytes = 0
        self._path = self.directory / _LOG
        (self.directory / (_LOG + ".tmp")).unlink(missing_ok=True)
        self._log_bytes = self._replay()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._closed = False

    def _replay(self) -> int:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return 0
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            payload = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            try:
                self._apply(self._codec.decode(payload))
            except ValueError:
                log.warning(
                    "hold store %s: a record could not be decoded (wrong key?); skipped", self.directory
                )
            pos += _FRAME.size + length
        if pos < len(data):
            log.info(
                "hold store %s: ignoring %d bytes of an incomplete last record",
                self.directory,
                len(data) - pos,
            )
            with open(self._path, "r+b") as f:
                f.truncate(pos)
        return pos

    def _apply(self, body: bytes) -> None:
        if body[:1] == b"P":
            (klen,) = _KEYLEN.unpack_from(body, 1)
            key = body[3 : 3 + klen].decode()
            value = body[3 + klen :]
            old = self._live.get(key)
            if old is not None:
                self._live_bytes -= len(old) + len(key)
            self._live[key] = value
            self._live_bytes += len(value) + len(key)
        elif body[:1] == b"D":
            for key in body[1:].decode().split("\n"):
                old = self._live.pop(key, None)
                if old is not None:
                    self._live_bytes -= len(old) + len(key)

    def _frame(self, body: bytes) -> bytes:
        payload = self._codec.encode(body)
        return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload

    def _append(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            view = view[os.write(self._fd, view) :]
        if self._fsync:
            os.fsync(self._fd)
        self._log_bytes += len(frame)

    def put(self, key: str, data: bytes) -> None:
        """Hold ``data`` under ``key`` (replacing any previous value); durable on return."""
        raw_key = key.encode()
        if len(raw_key) > 0xFFFF or "\n" in key:
            raise ValueError("hold store key must be under 64 KiB and contain no newline")
        body = b"P" + _KEYLEN.pack(len(raw_key)) + raw_key + data
        frame = self._frame(body)
        with self._lock:
            self._ensure_open()
            self._append(frame)
            self._apply(body)
            self._maybe_compact()

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._ensure_open()
            present = [k for k in keys if k in self._live]
            if not present:
                return
            body = b"D" + "\n".join(present).encode()
            self._append(self._frame(body))
            self._apply(body)
            self._maybe_compact()

    def items(self) -> Iterator[tuple[str, bytes]]:
        with self._lock:
            snapshot = list(self._live.items())
        return iter(snapshot)

    def __len__(self) -> int:
        return len(self._live)

    @property
    def log_bytes(self) -> int:
        return self._log_bytes

    def _maybe_compact(self) -> None:
        if self._log_bytes > 2 * self._live_bytes + _COMPACT_SLACK:
            self.compact()

    def compact(self) -> None:
        """Rewrite the log with only the live entries (atomic rename)."""
        with self._lock:
            tmp = self.directory / (_LOG + ".tmp")
            size = 0
            with open(tmp, "wb") as f:
                for key, value in self._live.items():
                    raw_key = key.encode()
                    frame = self._frame(b"P" + _KEYLEN.pack(len(raw_key)) + raw_key + value)
                    f.write(frame)
                    size += len(frame)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND, 0o600)
            self._log_bytes = size

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("hold store is closed")

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)
