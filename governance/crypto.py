"""AEAD primitives for field values and the at-rest ``BytesCodec``.

Both use AES-256-GCM-SIV (nonce-misuse resistant, so random 96-bit nonces stay safe at
telemetry volumes) under subkeys the keyring derives with HKDF, one per purpose, so a
field ciphertext can never be replayed as a queue record or vice versa.

Field ciphertext: ``enc:v2:<key-id>:<base64url(nonce || ciphertext+tag)>``; the associated
data binds key id, tenant, service, signal and attribute key (like an AWS KMS encryption
context), so a value moved to another field, signal, tenant or service -- or decrypted with
another service claimed -- fails authentication. ``enc:v1:`` values (written before the
service was bound) still decrypt; they are reported for re-encryption.

At-rest frame: ``EGA1 | len(key-id) | key-id | nonce | ciphertext+tag``; the key id is in
the frame so records written before a rotation stay readable.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

if TYPE_CHECKING:
    from errorgate.governance.keyring import Keyring

ENC_PREFIX = "enc:v2:"
ENC_PREFIX_V1 = "enc:v1:"
ENC_PREFIXES = (ENC_PREFIX, ENC_PREFIX_V1)
NONCE_BYTES = 12
_FIELD_AD = b"errorgate/enc/v1"
_FIELD_AD_V2 = b"errorgate/enc/v2"
_CODEC_MAGIC = b"EGA1"
_CODEC_AD = b"errorgate/at-rest/v1"


class DecryptError(ValueError):
    """A value could not be decrypted; the message says why without showing the value."""


class TamperError(DecryptError):
    """Authentication failed: the value was altered, or its claimed context (tenant, service,
    signal, attribute key) is not the one it was encrypted under."""


def is_encrypted(value: str) -> bool:
    return value.startswith(ENC_PREFIXES)


def field_version(value: str) -> str:
    """``v2``, ``v1`` or "" (not an errorgate ciphertext)."""
    if value.startswith(ENC_PREFIX):
        return "v2"
    return "v1" if value.startswith(ENC_PREFIX_V1) else ""


def _length_prefixed(*parts: str | bytes) -> bytes:
    # Length prefixes make the encoding unambiguous: ("a:b", "c") never equals ("a", "b:c").
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def field_ad(key_id: str, *, tenant: str, signal: str, key: str) -> bytes:
    """Associated data of an ``enc:v1:`` value (no service: read-only compatibility)."""
    return _length_prefixed(_FIELD_AD, key_id, tenant, signal, key)


def field_ad_v2(key_id: str, *, tenant: str, service: str, signal: str, key: str) -> bytes:
    return _length_prefixed(_FIELD_AD_V2, key_id, tenant, service, signal, key)


def seal(aead: AESGCMSIV, plaintext: bytes, ad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, ad)


def unseal(aead: AESGCMSIV, blob: bytes, ad: bytes) -> bytes:
    """Raises InvalidTag on any mismatch (wrong key, AD, or altered bytes)."""
    if len(blob) < NONCE_BYTES + 16:
        raise InvalidTag()
    return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)


def format_field_token(key_id: str, blob: bytes) -> str:
    return f"{ENC_PREFIX}{key_id}:{base64.urlsafe_b64encode(blob).decode('ascii').rstrip('=')}"


def parse_field_token(token: str) -> tuple[str, bytes]:
    """(key id, nonce+ciphertext) of an ``enc:v2:`` or ``enc:v1:`` value."""
    if not is_encrypted(token):
        raise DecryptError("not an errorgate ciphertext (expected enc:v2:<key-id>:<base64url>)")
    key_id, sep, data = token[len(ENC_PREFIX) :].partition(":")
    if not sep or not key_id or not data:
        raise DecryptError("malformed ciphertext (expected enc:v2:<key-id>:<base64url>)")
    try:
        blob = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise DecryptError(f"malformed ciphertext under key {key_id}: payload is not base64url") from None
    return key_id, blob


def parse_codec_frame(data: bytes) -> tuple[str, bytes]:
    if len(data) < len(_CODEC_MAGIC) + 1 or not data.startswith(_CODEC_MAGIC):
        raise DecryptError("at-rest record is not an errorgate encrypted frame (written without encryption?)")
    n = data[len(_CODEC_MAGIC)]
    start = len(_CODEC_MAGIC) + 1
    key_id = data[start : start + n].decode("ascii", errors="replace")
    return key_id, data[start + n :]


class AeadCodec:
    """``errorgate.codec.BytesCodec`` for queues, the dead-letter store and hold stores at rest.

    ``purpose`` (e.g. "queue", "dlq", "hold") selects the HKDF subkey and is bound as
    associated data, so records cannot be swapped between stores.
    """

    def __init__(self, keyring: Keyring, purpose: str) -> None:
        self._keyring = keyring
        self._purpose = purpose
        self._info = f"codec/{purpose}"

    def _ad(self, key_id: str) -> bytes:
        return _length_prefixed(_CODEC_AD, self._purpose, key_id)

    def encode(self, data: bytes) -> bytes:
        key_id, aead = self._keyring.aead_for(self._info)
        kid = key_id.encode("ascii")
        return _CODEC_MAGIC + bytes([len(kid)]) + kid + seal(aead, data, self._ad(key_id))

    def decode(self, data: bytes) -> bytes:
        key_id, blob = parse_codec_frame(data)
        # KeyringError (a ValueError) when the key is unknown or disabled
        _, aead = self._keyring.aead_for(self._info, key_id)
        try:
            return unseal(aead, blob, self._ad(key_id))
        except InvalidTag:
            raise DecryptError(
                f"at-rest record failed authentication under key {key_id} ({self._purpose}): "
                "tampered or truncated"
            ) from None
