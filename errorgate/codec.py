"""At-rest encoding hook for everything errorgate writes to disk (queues, dead letters, held items).

The privacy engineer plugs an AEAD codec in; without one, bytes are stored as they are.
"""

from __future__ import annotations

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
