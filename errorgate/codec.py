"""At-rest encoding hook for everything errorgate writes to disk (queues, dead letters, held items,
the file exporter's output).

The privacy engineer plugs an AEAD codec in; without one, bytes are stored as they are.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol


class BytesCodec(Protocol):
    def encode(self, data: bytes) -> bytes: ...

    def decode(self, data: bytes) -> bytes:
        """Inverse of ``encode``; raises ValueError on tampering or a wrong key."""
        ...


class IdentityCodec:
    """Stores bytes unchanged (the default when no codec is configured)."""

    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> bytes:
        return data


def or_identity(codec: BytesCodec | None) -> BytesCodec:
    return IdentityCodec() if codec is None else codec


# Text files errorgate writes line by line (the file exporter's OTLP/JSON lines) stay line
# oriented at rest: each line is sealed on its own, so a reader can stream, a torn last line
# spoils only itself, and rotation never splits a record.
LINE_PREFIX = b"egrest:v1:"


def encode_line(codec: BytesCodec, line: bytes) -> bytes:
    """``line`` (without its newline) sealed by ``codec``, as one line of text (no newline)."""
    return LINE_PREFIX + base64.urlsafe_b64encode(codec.encode(line)).rstrip(b"=")


def is_sealed_line(line: bytes) -> bool:
    return line.startswith(LINE_PREFIX)


def decode_line(codec: BytesCodec | None, line: bytes) -> bytes:
    """The inverse of ``encode_line``; a line written in clear (no keyring at the time) is
    returned as it is. ValueError names the problem (no codec, damaged line, wrong key)."""
    line = line.rstrip(b"\r\n")
    if not is_sealed_line(line):
        return line
    if codec is None:
        raise ValueError("line is encrypted at rest and no keyring is configured")
    body = line[len(LINE_PREFIX) :]
    try:
        sealed = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
    except binascii.Error:
        raise ValueError("encrypted line is damaged (not base64url)") from None
    return codec.decode(sealed)
