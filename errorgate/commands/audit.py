"""``errorgate audit verify`` and ``errorgate audit report``: the governance audit trail.

Verification needs only the audit public key (``--public-key``, default the ``.pub`` written
next to the signing key); the data keyring, when present, is used only to check the HMACs of
entries written before the log was signed."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from errorgate.config import parse_duration
from errorgate.governance.audit_log import AuditLog, VerifyResult
from errorgate.governance.audit_report import build_report, render_text
from errorgate.governance.keyring import KEYRING_FILE, Keyring
from errorgate.governance.kms import KeyringError

from ._governance import add_location_args, open_keyring, settings_from_args
from ._governance import audit_reader as _reader


def _verified(args: argparse.Namespace) -> tuple[AuditLog, VerifyResult]:
    settings = settings_from_args(args)
    if args.log:
        settings = replace(settings, audit_log=Path(args.log))
    if args.witness:
        settings = replace(settings, witness=Path(args.witness))
    log, verifier = _reader(settings, args.public_key)
    legacy_keys: Keyring | None = None
    if (settings.keyring_dir / KEYRING_FILE).exists():
        try:
            legacy_keys = open_keyring(args)[0]
        except KeyringError:
            legacy_keys = None  # a verifier need not hold the data keys
    return log, log.verify(verifier, legacy_keys)


def _legacy_note(result: VerifyResult) -> str:
    if not result.legacy:
        return ""
    checked = (
        "HMACs checked with the data keyring" if result.legacy_checked else "HMACs not checked (no keyring)"
    )
    sealed = (
        "sealed by the first signed entry"
        if result.entries > result.legacy
        else "not yet sealed by a signature"
    )
    return (
        f"; seq 1..{result.legacy} are legacy HMAC entries written before signing ({checked}; chain {sealed}; "
        "anyone who held the data keyring could have written them)"
    )


def _verify(args: argparse.Namespace) -> int:
    log, result = _verified(args)
    if result.ok:
        print(
            f"{log.path}: OK, {result.entries} entries, chain and signatures intact, "
            f"witnessed up to seq {result.witnessed}{_legacy_note(result)}"
        )
        return 0
    print(
        f"errorgate audit verify: {log.path}: first bad sequence number {result.first_bad_seq}: "
        f"{result.problem}",
        file=sys.stderr,
    )
    return 1


def _timezone(name: str | None) -> tzinfo | None:
    if not name:
        return None  # the machine's local time
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--timezone: unknown timezone {name!r}") from None


def _hours(text: str) -> tuple[int, int]:
    try:
        start, end = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise ValueError(f"--hours: expected START-END like 7-20, got {text!r}") from None
    if not 0 <= start < end <= 24:
        raise ValueError(f"--hours: expected 0 <= START < END <= 24, got {text!r}")
    return start, end


def _report(args: argparse.Namespace) -> int:
    try:
        window = parse_duration(args.since)
    except ValueError as e:
        raise ValueError(f"--since: {e}") from None
    tz, hours = _timezone(args.timezone), _hours(args.hours)
    log, verified = _verified(args)
    status = (
        f"verified ({verified.entries} entries){_legacy_note(verified)}"
        if verified.ok
        else f"BROKEN at seq {verified.first_bad_seq}: {verified.problem}"
    )
    now = datetime.now(UTC)
    report = build_report(
        log.entries(),
        since=now - timedelta(seconds=window),
        now=now,
        tz=tz,
        work_hours=hours,
        volume_factor=args.volume_factor,
        max_per_day=args.max_per_day,
    )
    if args.format == "json":
        print(json.dumps({"audit_chain": {"ok": verified.ok, "status": status}, **report}, indent=2))
    else:
        sys.stdout.write(render_text(report, status))
    return 0 if verified.ok else 1


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", metavar="FILE", help="audit log file (default <data-dir>/audit/decrypt.log)")
    p.add_argument("--witness", metavar="FILE", help="witness file of signed heads (default <log>.witness)")
    p.add_argument(
        "--public-key",
        metavar="FILE",
        help="Ed25519 public key (PEM) to verify with (default: <signing key>.pub)",
    )


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser(
        "audit",
        help="verify and review the decrypt audit log",
        description="The governance audit log (<data-dir>/audit/decrypt.log) is a hash chain of JSON lines "
        "signed with an Ed25519 key of its own, with signed chain heads in an append-only witness file; "
        "these commands verify it with the public key alone and summarise it for access reviews.",
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "verify",
        help="detect edited, deleted, reordered or truncated entries",
        description="Exit 0 if the log is intact; otherwise exit 1 naming the first bad sequence number.",
    )
    add_location_args(p)
    _log_args(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "report",
        help="access review: by user/role/field, denied attempts, unusual volume and hours",
        description="Summarise decrypt attempts in a window for the quarterly access review. "
        "Exits 1 (after printing) if the audit chain does not verify.",
    )
    add_location_args(p)
    _log_args(p)
    p.add_argument("--since", default="90d", help="window, e.g. 90d, 30d, 12h (default 90d)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--timezone", help="IANA timezone for hours and days (default: this machine's local time)")
    p.add_argument("--hours", default="7-20", help="working hours START-END (default 7-20)")
    p.add_argument(
        "--volume-factor", type=float, default=3.0, help="flag days above this x the user's median"
    )
    p.add_argument(
        "--max-per-day", type=int, default=20, help="flag days above this many attempts regardless"
    )
    p.set_defaults(func=_report)
