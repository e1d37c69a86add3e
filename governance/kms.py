"""KMS-style envelope encryption for the keyring's data keys.

The keyring never stores a data key in the clear: each one is wrapped by a ``Kms``.
A cloud KMS (AWS KMS, GCP KMS, Vault transit) plugs in by implementing the two
methods of the ``Kms`` Protocol; ``LocalKms`` is the built-in implementation whose
master key lives in an owner-only file or an environment variable.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_WRAP_AD = b"errorgate/kms-wrap/v1"
_NONCE = 12
MASTER_KEY_BYTES = 32


class KeyringError(ValueError):
    """A key or keyring problem; the message names the file, variable or key id (never key material)."""


@runtime_checkable
class Kms(Protocol):
    """Envelope interface: wrap a data key for storage, unwrap it for use."""

    name: str

    def wrap(self, key: bytes) -> bytes: ...

    def unwrap(self, blob: bytes) -> bytes: ...


def check_private_file(path: Path) -> None:
    """Refuse key material that other users could read: the error names the path and the fix."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise KeyringError(f"cannot read key file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyringError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically write ``data`` with 0600 permissions (the file is never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but an existing tmp file could have other bits
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def decode_master_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise KeyringError(f"{source}: master key is not base64") from None
    if len(key) != MASTER_KEY_BYTES:
        raise KeyringError(f"{source}: master key must be {MASTER_KEY_BYTES} bytes (base64), got {len(key)}")
    return key


def encode_master_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


class LocalKms:
    """Wraps data keys with AES-256-GCM under a local master key."""

    name = "local"

    def __init__(self, master_key: bytes, source: str = "<memory>") -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise KeyringError(f"{source}: master key must be {MASTER_KEY_BYTES} bytes")
        self._aead = AESGCM(master_key)
        self.source = source

    @classmethod
    def generate(cls) -> LocalKms:
        return cls(os.urandom(MASTER_KEY_BYTES))

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> tuple[LocalKms, bool]:
        """(kms, created). The file holds the base64url master key and must be owner-only."""
        if not path.exists():
            if not create:
                raise KeyringError(f"master key file {path} does not exist (run: errorgate keys init)")
            key = os.urandom(MASTER_KEY_BYTES)
            write_private_file(path, (encode_master_key(key) + "\n").encode("ascii"))
            return cls(key, str(path)), True
        check_private_file(path)
        return cls(decode_master_key(path.read_text(encoding="ascii"), str(path)), str(path)), False

    @classmethod
    def from_env(cls, var: str) -> LocalKms | None:
        value = os.environ.get(var)
        if not value:
            return None
        return cls(decode_master_key(value, f"environment variable {var}"), f"${var}")

    def wrap(self, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, key, _WRAP_AD)

    def unwrap(self, blob: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], _WRAP_AD)
        except (InvalidTag, ValueError):
            raise KeyringError(
                f"cannot unwrap a data key with the master key from {self.source}: "
                "wrong master key or corrupted keyring"
            ) from None


class AwsKms:
    """AWS KMS envelope: data keys are encrypted by a KMS key that never leaves AWS.

    The encryption context (AAD that must match on decrypt, and shows in CloudTrail) names
    errorgate and the keyring, so a wrapped key cannot be unwrapped for another purpose.
    ``errorgate keys rewrap`` moves every data key to another KMS key (or the same key's newest
    material) without re-encrypting any data."""

    name = "aws"

    def __init__(
        self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None, client: Any = None
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("kms", region_name=region, endpoint_url=endpoint_url)
        self._client = client
        self.key_id = key_id
        self.source = f"aws kms key {key_id}"
        self._context = {"errorgate": "keyring-data-key"}

    def wrap(self, key: bytes) -> bytes:
        try:
            out = self._client.encrypt(KeyId=self.key_id, Plaintext=key, EncryptionContext=self._context)
        except Exception as e:  # botocore's ClientError/EndpointConnectionError: name the key, not the data
            raise KeyringError(f"kms.key_id {self.key_id}: encrypt failed: {type(e).__name__}") from None
        return bytes(out["CiphertextBlob"])

    def unwrap(self, blob: bytes) -> bytes:
        try:
            out = self._client.decrypt(
                CiphertextBlob=blob, KeyId=self.key_id, EncryptionContext=self._context
            )
        except Exception as e:
            raise KeyringError(
                f"cannot unwrap a data key with {self.source}: {type(e).__name__} "
                "(wrong key, wrong encryption context or no access)"
            ) from None
        return bytes(out["Plaintext"])


class VaultTransitKms:
    """HashiCorp Vault's transit engine: ``encrypt``/``decrypt`` under a named transit key.

    Vault keeps the key; ``wrap`` returns ``vault:vN:...`` ciphertext as bytes. After rotating the
    transit key (``vault write -f transit/keys/NAME/rotate``), ``errorgate keys rewrap`` re-wraps
    every data key under the newest version; no field value is re-encrypted and the data key never
    leaving Vault's transit engine in the clear to anything but this process."""

    name = "vault"

    def __init__(
        self, key_name: str, *, url: str, token: str, mount: str = "transit", client: Any = None
    ) -> None:
        if client is None:
            import hvac

            client = hvac.Client(url=url, token=token)
        self._transit = client.secrets.transit
        self.key_name = key_name
        self.mount = mount
        self.source = f"vault transit key {mount}/{key_name}"

    def wrap(self, key: bytes) -> bytes:
        try:
            out = self._transit.encrypt_data(
                name=self.key_name, plaintext=base64.b64encode(key).decode("ascii"), mount_point=self.mount
            )
        except Exception as e:  # hvac.exceptions.VaultError and connection errors
            raise KeyringError(
                f"kms.key_name {self.key_name}: vault encrypt failed: {type(e).__name__}"
            ) from None
        return str(out["data"]["ciphertext"]).encode("ascii")

    def unwrap(self, blob: bytes) -> bytes:
        try:
            out = self._transit.decrypt_data(
                name=self.key_name, ciphertext=blob.decode("ascii"), mount_point=self.mount
            )
        except Exception as e:
            raise KeyringError(f"cannot unwrap a data key with {self.source}: {type(e).__name__}") from None
        return base64.b64decode(out["data"]["plaintext"])
