"""Reading and decompressing HTTP request bodies within a size limit.

Both the bytes on the wire and the decompressed bytes are bounded, so a small
compressed "bomb" is refused with 413 after inflating at most ``limit + 1`` bytes.
"""

from __future__ import annotations

import io
import zlib
from email.message import Message

from errorgate.receiver.common import MIB, size_limit_message

_LIMIT_KEY = "max_request_body_size_mib"
_CHUNK = 256 * 1024


class BodyError(Exception):
    """An HTTP error answer for the body; ``close`` when the connection can't be reused."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


def read_body(rfile: io.BufferedIOBase, headers: Message, limit_mib: float) -> bytes:
    """The request body (Content-Length or chunked), refusing anything over ``limit_mib`` MiB."""
    limit = int(limit_mib * MIB)
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(rfile, limit_mib)
    length_text = headers.get("Content-Length")
    if length_text is None:
        raise BodyError(411, "Content-Length or chunked Transfer-Encoding is required", close=True)
    try:
        length = int(length_text)
        if length < 0:
            raise ValueError
    except ValueError:
        raise BodyError(400, "Content-Length is not a non-negative integer", close=True) from None
    if length > limit:
        raise BodyError(
            413, size_limit_message("request body", length, limit, _LIMIT_KEY, limit_mib), close=True
        )
    body = rfile.read(length)
    if len(body) != length:
        raise BodyError(400, f"request body ended after {len(body)} of {length} bytes", close=True)
    return body


def _read_chunked(rfile: io.BufferedIOBase, limit_mib: float) -> bytes:
    limit = int(limit_mib * MIB)
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BodyError(400, "malformed chunked encoding", close=True) from None
        if size == 0:
            # Skip trailers up to the blank line.
            while rfile.readline(8192).strip():
                pass
            return b"".join(parts)
        total += size
        if total > limit:
            raise BodyError(
                413, size_limit_message("request body", None, limit, _LIMIT_KEY, limit_mib), close=True
            )
        chunk = rfile.read(size)
        if len(chunk) != size:
            raise BodyError(400, "request body ended inside a chunk", close=True)
        parts.append(chunk)
        rfile.readline(8)  # CRLF after the chunk


def decompress(body: bytes, encoding: str | None, limit_mib: float) -> bytes:
    """Undo Content-Encoding (gzip, deflate, zstd, identity) with the decompressed size bounded."""
    limit = _Limit(limit_mib)
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc in ("gzip", "x-gzip"):
        return _inflate(body, zlib.MAX_WBITS | 16, limit, "gzip")
    if enc == "deflate":
        # HTTP "deflate" is zlib-wrapped, but some clients send raw deflate streams.
        try:
            return _inflate(body, zlib.MAX_WBITS, limit, "deflate")
        except BodyError as e:
            if e.status == 413:
                raise
            return _inflate(body, -zlib.MAX_WBITS, limit, "deflate")
    if enc == "zstd":
        return _unzstd(body, limit)
    raise BodyError(415, "unsupported Content-Encoding; use gzip, deflate, zstd or none")


class _Limit(int):
    """A byte limit that remembers the configured MiB figure for messages."""

    mib: float

    def __new__(cls, mib: float) -> _Limit:
        obj = super().__new__(cls, int(mib * MIB))
        obj.mib = mib
        return obj


def _too_large(limit: _Limit) -> BodyError:
    return BodyError(
        413, size_limit_message("decompressed request body", None, int(limit), _LIMIT_KEY, limit.mib)
    )


def _inflate(body: bytes, wbits: int, limit: _Limit, name: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    data = body
    while True:
        d = zlib.decompressobj(wbits)
        try:
            # max_length bounds the inflated output, so a bomb costs at most limit + 1 bytes.
            out = d.decompress(data, limit + 1 - total)
            total += len(out)
            if total > limit or d.unconsumed_tail:
                raise _too_large(limit)
            tail = d.flush()
            total += len(tail)
            if total > limit:
                raise _too_large(limit)
            out += tail
        except zlib.error:
            raise BodyError(400, f"body is not valid {name} data") from None
        parts.append(out)
        if not d.eof:
            raise BodyError(400, f"{name} body is truncated")
        data = d.unused_data
        # gzip allows concatenated members; zlib/raw deflate streams end at their first end marker.
        if not data or wbits != zlib.MAX_WBITS | 16:
            return b"".join(parts)


def _unzstd(body: bytes, limit: _Limit) -> bytes:
    import zstandard

    parts: list[bytes] = []
    total = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
            while True:
                chunk = reader.read(min(_CHUNK, limit + 1 - total))
                if not chunk:
                    return b"".join(parts)
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                parts.append(chunk)
    except zstandard.ZstdError:
        raise BodyError(400, "body is not valid zstd data") from None
