"""Governance audit log: JSON lines in a hash chain, each line signed with Ed25519.

Every decrypt attempt, key operation, access-policy change and rules change is one entry:
``seq`` (1, 2, ...), ``prev`` (sha256 of the previous line's bytes), ``event``, the event's
fields, ``signer`` (fingerprint of the signing key) and ``sig`` (Ed25519 over the canonical
JSON of every other field). The signing key lives in its own file (``audit.signing_key``,
created 0600 on first use), never in the data keyring, so whoever holds the data keys --
and can decrypt -- cannot re-sign an edited log. Verification needs only the public key.

After every ``witness_every`` entries the signed chain head (seq, hash of that line) is
appended to a second, append-only file -- the witness, like a Certificate Transparency
signed tree head -- so cutting entries off the end of the log is detected as long as the
witness is kept where the log's writer cannot rewrite it (``chattr +a``, another host).

Entries written before signing existed carry ``hmac`` (keyed from the data keyring). They
are still read: their hash chain is checked without any key, the first signed entry seals
them (its ``prev`` is the hash of the last one), and ``verify`` reports how many there are
-- with the keyring at hand their HMACs are checked too.

Entries record who, what, when, outcome, the stated reason and the access policy's sha256
-- never a decrypted value, never key material.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from errorgate.governance.kms import KeyringError, check_private_file, write_private_file

GENESIS = "0" * 64
PURPOSE = "audit-log"
MAX_REASON = 500
_TAIL_READ = 1 << 16
_RESERVED = ("seq", "time", "prev", "hmac", "hmac_key_id", "signer", "sig")


class AuditLogError(ValueError):
    """The audit log cannot be appended to or read; the message names the file."""


class LegacyKeys(Protocol):
    """The data keyring, only to check the HMACs of entries written before signing."""

    def hmac_key_for(self, key_id: str, purpose: str) -> bytes: ...


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""
    legacy: int = 0  # entries written before signing (HMAC), the first ``legacy`` lines
    legacy_checked: bool = False  # their HMACs were checked with the data keyring
    witnessed: int = 0  # highest seq covered by a signed head in the witness


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _hmac(key: bytes, entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hmac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- keys


def _fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


class AuditVerifier:
    """Checks signatures with the public key only."""

    def __init__(self, public: Ed25519PublicKey, source: str) -> None:
        self.public = public
        self.source = source
        self.key_id = _fingerprint(public)

    @classmethod
    def from_file(cls, path: Path) -> AuditVerifier:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except OSError as e:
            raise AuditLogError(f"cannot read public key {path}: {e.strerror}") from None
        except ValueError:
            raise AuditLogError(f"{path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise AuditLogError(f"{path} is not an Ed25519 public key")
        return cls(key, str(path))

    def valid(self, entry: dict[str, Any]) -> bool:
        body = {k: v for k, v in entry.items() if k != "sig"}
        try:
            sig = base64.b64decode(str(entry.get("sig", "")), validate=True)
            self.public.verify(sig, _canonical(body))
        except (InvalidSignature, ValueError):
            return False
        return True


class AuditSigner(AuditVerifier):
    """Holds the Ed25519 private key: ``<path>`` (0600) and ``<path>.pub`` (PEM public key)."""

    def __init__(self, private: Ed25519PrivateKey, source: str) -> None:
        super().__init__(private.public_key(), source)
        self._private = private

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> AuditSigner:
        path = Path(path)
        if not path.exists():
            if not create:
                raise AuditLogError(f"audit signing key {path} does not exist")
            private = Ed25519PrivateKey.generate()
            pem = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_private_file(path, pem)
            signer = cls(private, str(path))
            public_path(path).write_bytes(signer.public_pem())
            return signer
        try:
            check_private_file(path)
        except KeyringError as e:
            raise AuditLogError(str(e)) from None
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditLogError(f"audit signing key {path} is not an Ed25519 private key")
        return cls(key, str(path))

    def public_pem(self) -> bytes:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {**entry, "signer": self.key_id}
        entry["sig"] = base64.b64encode(self._private.sign(_canonical(entry))).decode("ascii")
        return entry


def public_path(signing_key: Path) -> Path:
    return signing_key.with_name(signing_key.name + ".pub")


# ---------------------------------------------------------------- the log


class AuditLog:
    def __init__(
        self,
        path: Path,
        *,
        signer: AuditSigner | None = None,
        witness: Path | None = None,
        witness_every: int = 1,
    ) -> None:
        self.path = Path(path)
        self.witness_path = Path(witness) if witness else self.path.with_name(self.path.name + ".witness")
        self.signer = signer
        self.witness_every = max(1, witness_every)

    # ------------------------------------------------------------------ writing

    def append(self, record: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
        """Append one signed entry (durable before return) and return it as written."""
        if self.signer is None:
            raise AuditLogError(f"audit log {self.path}: opened without a signing key, cannot append")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = {k: v for k, v in record.items() if k not in _RESERVED}
        entry.setdefault("event", "decrypt")
        if isinstance(entry.get("reason"), str):
            entry["reason"] = entry["reason"][:MAX_REASON]
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            seq, prev = _next_position(fd, self.path)
            entry.update(seq=seq, time=utc_iso(now or datetime.now(UTC)), prev=prev)
            line = _canonical(self.signer.sign(entry))
            os.write(fd, line + b"\n")
            os.fsync(fd)
            if seq % self.witness_every == 0:
                self._witness(seq, _line_hash(line), entry["time"])
        finally:
            os.close(fd)
        return json.loads(line)

    def _witness(self, seq: int, line_hash: str, time: str) -> None:
        assert self.signer is not None
        head = _canonical(self.signer.sign({"seq": seq, "hash": line_hash, "time": time}))
        fd = os.open(self.witness_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, head + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reading

    def lines(self) -> list[bytes]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_bytes().split(b"\n") if line]

    def entries(self) -> list[dict[str, Any]]:
        """Parsed entries (unreadable lines skipped: ``verify`` is where they are reported)."""
        out = []
        for line in self.lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def last_event(self, event: str) -> dict[str, Any] | None:
        return next((e for e in reversed(self.entries()) if e.get("event") == event), None)

    def verify(self, verifier: AuditVerifier, legacy_keys: LegacyKeys | None = None) -> VerifyResult:
        """Walk the chain and the witness; report the first sequence number that is not what an
        untouched log has. Needs only the public key (``legacy_keys`` is optional)."""
        lines = self.lines()
        chain = _ChainCheck(verifier, legacy_keys)
        for index, line in enumerate(lines, start=1):
            problem = chain.check(index, line)
            if problem is not None:
                return VerifyResult(False, len(lines), problem[0], problem[1], legacy=chain.legacy)
        bad = _check_witness(self.witness_path, verifier, lines, chain.signed)
        if bad is not None:
            return VerifyResult(False, len(lines), bad[0], bad[1], legacy=chain.legacy)
        witnessed = _witnessed_seq(self.witness_path)
        return VerifyResult(
            True,
            len(lines),
            legacy=chain.legacy,
            legacy_checked=legacy_keys is not None and chain.legacy > 0,
            witnessed=witnessed,
        )


class _ChainCheck:
    """State of one walk over the log: the previous line's hash, legacy and signed counts."""

    def __init__(self, verifier: AuditVerifier, legacy_keys: LegacyKeys | None) -> None:
        self.verifier = verifier
        self.legacy_keys = legacy_keys
        self.prev = GENESIS
        self.legacy = 0
        self.signed = 0

    def check(self, index: int, line: bytes) -> tuple[int, str] | None:
        try:
            entry = json.loads(line)
            seq = int(entry["seq"])
        except (ValueError, KeyError, TypeError):
            return index, f"line {index}: not a valid audit entry"
        if "sig" in entry:
            if entry.get("signer") != self.verifier.key_id:
                return seq, f"entry seq {seq} (line {index}) is signed by another key ({entry.get('signer')})"
            if not self.verifier.valid(entry):
                return seq, f"entry seq {seq} (line {index}) was modified (signature does not verify)"
            self.signed += 1
        elif "hmac" in entry and self.signed == 0:
            problem = self._legacy(entry, seq, index)
            if problem is not None:
                return problem
            self.legacy += 1
        else:
            return seq, f"entry seq {seq} (line {index}) is unsigned"
        if seq != index:
            what = "deleted" if seq > index else "duplicated"
            return (
                index,
                f"expected seq {index} at line {index}, found seq {seq}: entries {what} or reordered",
            )
        if entry.get("prev") != self.prev:
            return seq, f"entry seq {seq}: previous-hash link is broken (entries deleted or reordered)"
        self.prev = _line_hash(line)
        return None

    def _legacy(self, entry: dict[str, Any], seq: int, index: int) -> tuple[int, str] | None:
        if self.legacy_keys is None:
            return None
        try:
            key = self.legacy_keys.hmac_key_for(str(entry["hmac_key_id"]), PURPOSE)
        except (KeyringError, KeyError) as e:
            return seq, f"legacy entry seq {seq} (line {index}): cannot check its HMAC: {e}"
        if not hmac.compare_digest(str(entry.get("hmac", "")), _hmac(key, entry)):
            return seq, f"legacy entry seq {seq} (line {index}) was modified (HMAC)"
        return None


def _witness_heads(path: Path) -> list[bytes]:
    if not path.exists():
        return []
    return [line for line in path.read_bytes().split(b"\n") if line]


def _witnessed_seq(path: Path) -> int:
    seqs = [int(json.loads(h).get("seq", 0)) for h in _witness_heads(path)]
    return max(seqs, default=0)


def _check_witness(
    path: Path, verifier: AuditVerifier, lines: list[bytes], signed: int
) -> tuple[int, str] | None:
    heads = _witness_heads(path)
    count = len(lines)
    if not heads:
        if signed:
            return count, f"witness {path} is missing or empty: the log's tail cannot be checked"
        return None
    for number, raw in enumerate(heads, start=1):
        try:
            head = json.loads(raw)
            seq = int(head["seq"])
        except (ValueError, KeyError, TypeError):
            return count, f"witness {path} line {number} is unreadable"
        if head.get("signer") != verifier.key_id or not verifier.valid(head):
            return count, f"witness {path} line {number} was modified (signature does not verify)"
        if seq > count:
            return count + 1, f"entries {count + 1}..{seq} are missing (log truncated; witnessed in {path})"
        if _line_hash(lines[seq - 1]) != head["hash"]:
            return seq, f"entry seq {seq} does not match the signed head in witness {path}"
    return None


def _next_position(fd: int, path: Path) -> tuple[int, str]:
    last = _last_line(fd)
    if last is None:
        return 1, GENESIS
    try:
        return int(json.loads(last)["seq"]) + 1, _line_hash(last)
    except (ValueError, KeyError, TypeError):
        raise AuditLogError(
            f"audit log {path}: last entry is unreadable; run errorgate audit verify"
        ) from None


def _last_line(fd: int) -> bytes | None:
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - _TAIL_READ)
    data = os.pread(fd, size - start, start)
    lines = [line for line in data.split(b"\n") if line]
    return lines[-1] if lines else None


def ciphertext_digest(token: str) -> str:
    """Short stable reference to *which* ciphertext was accessed, without the value."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
