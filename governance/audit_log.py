"""Tamper-evident decrypt audit log: JSON lines in a hash chain, each line HMAC-signed.

Each entry carries ``seq`` (1, 2, ...), ``prev`` (sha256 of the previous line's bytes) and
``hmac`` (HMAC-SHA256 over the canonical JSON of every other field, keyed with the
keyring's ``hmac_key("audit-log")``; ``hmac_key_id`` says which key, so rotation keeps old
entries verifiable). Editing an entry breaks its HMAC; deleting or reordering entries
breaks the ``seq``/``prev`` sequence; cutting entries off the end is caught by the signed
head file (``decrypt.log.head``) that records the last sequence number and line hash.

Entries record who, what (service, attribute key, key id, a hash of the ciphertext), when,
outcome, the stated reason and the access policy's sha256 -- never the value.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from errorgate.governance.keyring import Keyring
from errorgate.governance.kms import KeyringError, write_private_file

GENESIS = "0" * 64
PURPOSE = "audit-log"
MAX_REASON = 500
_TAIL_READ = 1 << 16


class AuditLogError(ValueError):
    """The audit log cannot be appended to; the message names the file."""


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sign(key: bytes, entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hmac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class AuditLog:
    def __init__(self, path: Path, keyring: Keyring) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.keyring = keyring

    @classmethod
    def in_data_dir(cls, data_dir: Path, keyring: Keyring) -> AuditLog:
        return cls(Path(data_dir) / "audit" / "decrypt.log", keyring)

    # ------------------------------------------------------------------ writing

    def append(self, record: dict[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
        """Append one entry (durable before return) and return it as written."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = {k: v for k, v in record.items() if k not in ("seq", "time", "prev", "hmac", "hmac_key_id")}
        if isinstance(entry.get("reason"), str):
            entry["reason"] = entry["reason"][:MAX_REASON]
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            if last is None:
                seq, prev = 1, GENESIS
            else:
                try:
                    seq = int(json.loads(last)["seq"]) + 1
                except (ValueError, KeyError, TypeError):
                    raise AuditLogError(
                        f"audit log {self.path}: last entry is unreadable; run errorgate audit verify"
                    ) from None
                prev = _line_hash(last)
            key_id, key = self.keyring.hmac_key(PURPOSE)
            entry.update(seq=seq, time=utc_iso(now or datetime.now(UTC)), prev=prev, hmac_key_id=key_id)
            entry["hmac"] = _sign(key, entry)
            line = _canonical(entry)
            os.write(fd, line + b"\n")
            os.fsync(fd)
            head = {"seq": seq, "hash": _line_hash(line), "hmac_key_id": key_id}
            head["hmac"] = _sign(key, head)
            write_private_file(self.head_path, _canonical(head) + b"\n")
        finally:
            os.close(fd)
        return entry

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

    def verify(self) -> VerifyResult:
        """Walk the chain; report the first sequence number that is not what an untouched log has."""
        lines = self.lines()
        prev = GENESIS
        for index, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
                seq = int(entry["seq"])
                key = self.keyring.hmac_key_for(str(entry["hmac_key_id"]), PURPOSE)
            except KeyringError as e:
                return VerifyResult(False, len(lines), index, f"line {index}: cannot verify: {e}")
            except (ValueError, KeyError, TypeError):
                return VerifyResult(False, len(lines), index, f"line {index}: not a valid audit entry")
            if not hmac.compare_digest(str(entry.get("hmac", "")), _sign(key, entry)):
                return VerifyResult(False, len(lines), seq, f"entry seq {seq} (line {index}) was modified")
            if seq != index:
                what = "deleted" if seq > index else "duplicated"
                return VerifyResult(
                    False,
                    len(lines),
                    index,
                    f"expected seq {index} at line {index}, found seq {seq}: entries {what} or reordered",
                )
            if entry.get("prev") != prev:
                return VerifyResult(False, len(lines), seq, f"entry seq {seq}: previous-hash link is broken")
            prev = _line_hash(line)
        return self._verify_head(len(lines), prev)

    def _verify_head(self, count: int, last_hash: str) -> VerifyResult:
        if not self.head_path.exists():
            if count == 0:
                return VerifyResult(True, 0)
            return VerifyResult(False, count, count, f"head file {self.head_path} is missing")
        try:
            head = json.loads(self.head_path.read_bytes())
            key = self.keyring.hmac_key_for(str(head["hmac_key_id"]), PURPOSE)
            head_seq = int(head["seq"])
        except (ValueError, KeyError, TypeError):
            return VerifyResult(False, count, count + 1, f"head file {self.head_path} is unreadable")
        if not hmac.compare_digest(str(head.get("hmac", "")), _sign(key, head)):
            return VerifyResult(False, count, head_seq, f"head file {self.head_path} was modified")
        if head_seq > count:
            return VerifyResult(
                False, count, count + 1, f"entries {count + 1}..{head_seq} are missing (log truncated)"
            )
        if head_seq == count and head["hash"] != last_hash:
            return VerifyResult(False, count, count, f"entry seq {count} does not match the signed head")
        # head_seq == count - 1 happens after a crash between the log write and the head update.
        return VerifyResult(True, count)


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
