"""The keyring: data keys with ids, rotation and crypto-shredding.

Layout of ``<directory>`` (owner-only, 0700/0600):
  keyring.json   data keys, each wrapped by the KMS envelope, plus their status
  master.key     the local KMS master key (absent when the master key comes from the
                 environment variable or a cloud KMS is plugged in)

Key states: ``active`` (encrypts and decrypts; exactly one), ``retired`` (decrypts only,
after a rotation) and ``disabled``. Disabling is crypto-shredding: the wrapped key
material is deleted from the file, so every ciphertext under that key becomes
permanently undecryptable, wherever copies of it live (backends, backups, DLQ). Only the
HMAC subkey of the audit log is kept for a disabled key, so the decrypt audit trail
stays verifiable; it cannot recover the data key.

Every component derives its own subkey with HKDF (field encryption, redaction hashes
and tokens, at-rest codec, audit log), so no two uses share key material.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from errorgate.governance.crypto import (
    DecryptError,
    TamperError,
    field_ad,
    field_ad_v2,
    field_version,
    format_field_token,
    parse_field_token,
    seal,
    unseal,
)
from errorgate.governance.kms import (
    KeyringError,
    Kms,
    LocalKms,
    check_private_file,
    write_private_file,
)

__all__ = ["DecryptError", "KeyInfo", "Keyring", "KeyringError"]

KEYRING_FILE = "keyring.json"
MASTER_KEY_FILE = "master.key"
FORMAT = "errorgate-keyring/1"
DATA_KEY_BYTES = 32
# Subkeys that survive crypto-shredding: verifying history must not need the data key.
RETAINED_SUBKEYS = ("hmac/audit-log",)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    status: str  # active | retired | disabled
    created: str  # ISO-8601 UTC
    disabled: str | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _derive(key: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"errorgate/{info}".encode()).derive(
        key
    )


class Keyring:
    """Thread-safe: reads use immutable snapshots; rotate/disable take a lock (and a file lock)."""

    def __init__(self, directory: Path, kms: Kms, doc: dict[str, Any], logger: logging.Logger) -> None:
        self.directory = directory
        self.path = directory / KEYRING_FILE
        self._kms = kms
        self._logger = logger
        self._lock = threading.Lock()
        self._load(doc)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        create: bool = True,
        env_var: str | None = "ERRORGATE_KEYRING",
        kms: Kms | None = None,
        logger: logging.Logger | None = None,
    ) -> Keyring:
        """Open ``<directory>/keyring.json``, creating it (and a local master key) when missing.

        Master key precedence: ``kms`` argument, then the base64url master key in ``env_var``,
        then ``<directory>/master.key``.
        """
        log = logger or logging.getLogger("errorgate.keyring")
        directory = Path(directory)
        path = directory / KEYRING_FILE
        if not path.exists() and not create:
            raise KeyringError(f"no keyring at {path} (run: errorgate keys init --keyring {directory})")
        if kms is None and env_var:
            kms = LocalKms.from_env(env_var)
        if kms is None:
            kms, created_master = LocalKms.from_file(
                directory / MASTER_KEY_FILE, create=create and not path.exists()
            )
            if created_master:
                log.warning(
                    "created local master key at %s (owner-only); back it up, or use %s or a KMS",
                    directory / MASTER_KEY_FILE,
                    env_var or "the ERRORGATE_KEYRING variable",
                )
        if path.exists():
            check_private_file(path)
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise KeyringError(f"cannot read keyring {path}: {e}") from None
            return cls(directory, kms, doc, log)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _file_lock(directory):
            if path.exists():  # another process created it meanwhile
                check_private_file(path)
                return cls(directory, kms, json.loads(path.read_text(encoding="utf-8")), log)
            doc = {"format": FORMAT, "kms": getattr(kms, "name", "custom"), "active": "", "keys": []}
            ring = cls(directory, kms, doc, log)
            ring._add_key_locked()
        log.warning("created keyring at %s with key %s (owner-only permissions)", path, ring.active_key_id())
        return ring

    def _load(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise KeyringError(f"{self.path}: unsupported keyring format {doc.get('format')!r}")
        keys: dict[str, bytes] = {}
        retained: dict[tuple[str, str], bytes] = {}
        for entry in doc.get("keys", []):
            kid = entry["id"]
            if entry.get("wrapped"):
                keys[kid] = self._kms.unwrap(_unb64(entry["wrapped"]))
            for info, blob in entry.get("retained", {}).items():
                retained[(kid, info)] = self._kms.unwrap(_unb64(blob))
        if doc["keys"] and doc.get("active") not in keys:
            raise KeyringError(f"{self.path}: active key {doc.get('active')!r} has no key material")
        # Material first, then the document naming the active key: a concurrent encrypt never
        # sees an active id whose key is not loaded yet.
        self._aeads: dict[tuple[str, str], AESGCMSIV] = {}
        self._subkeys: dict[tuple[str, str], bytes] = {}
        self._keys = keys
        self._retained = retained
        self._doc = doc

    def reload(self) -> None:
        """Re-read the file (picks up a rotation or disable done by ``errorgate keys``)."""
        with self._lock:
            check_private_file(self.path)
            self._load(json.loads(self.path.read_text(encoding="utf-8")))

    # ------------------------------------------------------------------ key management

    def active_key_id(self) -> str:
        return str(self._doc["active"])

    def list(self) -> list[KeyInfo]:
        return [
            KeyInfo(id=e["id"], status=e["status"], created=e["created"], disabled=e.get("disabled"))
            for e in self._doc["keys"]
        ]

    def rotate(self) -> str:
        """Make a new key active; the previous one stays usable for decryption. Returns the new id."""
        with self._lock, _file_lock(self.directory):
            self._refresh_locked()
            kid = self._add_key_locked()
        self._logger.info("keyring %s rotated: active key is now %s", self.path, kid)
        return kid

    def disable(self, key_id: str) -> None:
        """Crypto-shred ``key_id``: its material is deleted and its ciphertexts become undecryptable."""
        with self._lock, _file_lock(self.directory):
            self._refresh_locked()
            doc = json.loads(json.dumps(self._doc))
            entry = next((e for e in doc["keys"] if e["id"] == key_id), None)
            if entry is None:
                raise KeyringError(f"unknown key id {key_id!r} (see: errorgate keys list)")
            if entry["status"] == "active":
                raise KeyringError(
                    f"key {key_id} is active: rotate first (errorgate keys rotate), then disable it"
                )
            if entry["status"] == "disabled":
                return
            material = self._keys[key_id]
            entry["retained"] = {
                info: _b64(self._kms.wrap(_derive(material, info))) for info in RETAINED_SUBKEYS
            }
            entry.pop("wrapped", None)
            entry["status"] = "disabled"
            entry["disabled"] = _now()
            self._save_locked(doc)
        self._logger.warning("key %s disabled (crypto-shredded) in %s", key_id, self.path)

    def rewrap(self, target: Kms) -> int:
        """Wrap every data key (and retained subkey) with ``target`` instead of the current KMS.

        No ciphertext changes: field values, queues and audit entries stay as they are. Returns
        how many keys were re-wrapped."""
        with self._lock, _file_lock(self.directory):
            self._refresh_locked()
            doc = json.loads(json.dumps(self._doc))
            count = 0
            for entry in doc["keys"]:
                if entry.get("wrapped"):
                    entry["wrapped"] = _b64(target.wrap(self._keys[entry["id"]]))
                    count += 1
                for info in list(entry.get("retained", {})):
                    entry["retained"][info] = _b64(target.wrap(self._retained[(entry["id"], info)]))
            doc["kms"] = target.name
            self._kms = target
            self._save_locked(doc)
        self._logger.warning("keyring %s: %d data keys re-wrapped with %s", self.path, count, target.name)
        return count

    def _refresh_locked(self) -> None:
        if self.path.exists():
            self._load(json.loads(self.path.read_text(encoding="utf-8")))

    def _add_key_locked(self) -> str:
        doc = json.loads(json.dumps(self._doc))
        kid = f"k{len(doc['keys']) + 1}-{secrets.token_hex(2)}"
        for entry in doc["keys"]:
            if entry["status"] == "active":
                entry["status"] = "retired"
        material = os.urandom(DATA_KEY_BYTES)
        doc["keys"].append(
            {"id": kid, "status": "active", "created": _now(), "wrapped": _b64(self._kms.wrap(material))}
        )
        doc["active"] = kid
        self._save_locked(doc)
        return kid

    def _save_locked(self, doc: dict[str, Any]) -> None:
        write_private_file(self.path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
        self._load(doc)

    # ------------------------------------------------------------------ derived keys

    def subkey(self, info: str, key_id: str | None = None) -> tuple[str, bytes]:
        """(key id, 32-byte HKDF subkey for ``info``) from ``key_id`` or the active key."""
        kid = key_id or self.active_key_id()
        cached = self._subkeys.get((kid, info))
        if cached is not None:
            return kid, cached
        material = self._keys.get(kid)
        if material is None:
            retained = self._retained.get((kid, info))
            if retained is not None:
                return kid, retained
            if key_id is not None and self._reload_if_changed(kid):
                return self.subkey(info, key_id)
            raise KeyringError(self._missing_reason(kid))
        sub = _derive(material, info)
        self._subkeys[(kid, info)] = sub
        return kid, sub

    def aead_for(self, info: str, key_id: str | None = None) -> tuple[str, AESGCMSIV]:
        kid = key_id or self.active_key_id()
        aead = self._aeads.get((kid, info))
        if aead is None:
            kid, sub = self.subkey(info, kid)
            aead = AESGCMSIV(sub)
            self._aeads[(kid, info)] = aead
        return kid, aead

    def hmac_key(self, purpose: str) -> tuple[str, bytes]:
        """(key id, HMAC key) for ``purpose`` under the active key (redaction hashes/tokens, audit log)."""
        return self.subkey(f"hmac/{purpose}")

    def hmac_key_for(self, key_id: str, purpose: str) -> bytes:
        """The HMAC key of ``purpose`` under a specific (possibly retired or disabled) key."""
        return self.subkey(f"hmac/{purpose}", key_id)[1]

    def _missing_reason(self, kid: str) -> str:
        entry = next((e for e in self._doc["keys"] if e["id"] == kid), None)
        if entry is None:
            return f"unknown key id {kid!r} (not in keyring {self.path})"
        return (
            f"key {kid} is disabled (crypto-shredded {entry.get('disabled') or ''}); "
            "its ciphertexts cannot be decrypted"
        )

    def _reload_if_changed(self, kid: str) -> bool:
        # A key id we have never seen may have been added by `errorgate keys rotate` in another process.
        if any(e["id"] == kid for e in self._doc["keys"]) or not self.path.exists():
            return False
        try:
            self.reload()
        except (OSError, ValueError):
            return False
        return kid in self._keys

    # ------------------------------------------------------------------ field encryption

    def encrypt_field(self, plaintext: str, *, key: str, signal: str, tenant: str, service: str) -> str:
        """``enc:v2:<key-id>:<base64url>`` under the active key, bound to tenant, service, signal
        and attribute key."""
        kid, aead = self.aead_for("field")
        ad = field_ad_v2(kid, tenant=tenant, service=service, signal=_s(signal), key=key)
        return format_field_token(kid, seal(aead, plaintext.encode("utf-8"), ad))

    def decrypt_field(self, token: str, *, key: str, signal: str, tenant: str, service: str) -> str:
        """Plaintext of an ``enc:v2:`` (or legacy ``enc:v1:``, whose service is not bound) value.

        Raises ``TamperError`` when authentication fails, ``DecryptError`` for other reasons."""
        version = field_version(token)
        kid, blob = parse_field_token(token)
        try:
            _, aead = self.aead_for("field", kid)
        except KeyringError as e:
            raise DecryptError(str(e)) from None
        if version == "v1":
            ad = field_ad(kid, tenant=tenant, signal=_s(signal), key=key)
            bound = "attribute key, signal or tenant"
        else:
            ad = field_ad_v2(kid, tenant=tenant, service=service, signal=_s(signal), key=key)
            bound = "attribute key, service, signal or tenant"
        try:
            plain = unseal(aead, blob, ad)
        except InvalidTag:
            raise TamperError(
                f"authentication failed under key {kid}: the value was altered, or the {bound} "
                f"differ from where it was encrypted"
            ) from None
        return plain.decode("utf-8")


def _s(signal: object) -> str:
    # Signal is a str Enum; str() of it would give "Signal.TRACES".
    return str(getattr(signal, "value", signal))


@contextmanager
def _file_lock(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
