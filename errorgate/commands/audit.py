"""``errorgate audit verify`` and ``errorgate audit report``: the decrypt audit trail."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from errorgate.config import parse_duration
from errorgate.governance.audit_log import AuditLog
from errorgate.governance.audit_report import build_report, render_text

from .keys import add_location_args, open_keyring


def _audit_log(args: argparse.Namespace) -> AuditLog:
    keyring, settings = open_keyring(args)
    if args.log:
        return AuditLog(args.log, keyring)
    return AuditLog.in_data_dir(settings.data_dir, keyring)


def _verify(args: argparse.Namespace) -> int:
    log = _audit_log(args)
    result = log.verify()
    if result.ok:
        print(f"{log.path}: OK, {result.entries} entries, chain and signatures intact")
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
    log = _audit_log(args)
    verified = log.verify()
    status = (
        f"verified ({verified.entries} entries)"
        if verified.ok
        else f"BROKEN at seq {verified.first_bad_seq}: {verified.problem}"
    )
    now = datetime.now(UTC)
    report = build_report(
        log.entries(),
        since=now - timedelta(seconds=window),
        now=now,
        tz=_timezone(args.timezone),
        work_hours=_hours(args.hours),
        volume_factor=args.volume_factor,
        max_per_day=args.max_per_day,
    )
    if args.format == "json":
        print(json.dumps({"audit_chain": {"ok": verified.ok, "status": status}, **report}, indent=2))
    else:
        sys.stdout.write(render_text(report, status))
    return 0 if verified.ok else 1


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = subparsers.add_parser(
        "audit",
        help="verify and review the decrypt audit log",
        description="The decrypt audit log (<data-dir>/audit/decrypt.log) is a hash chain of HMAC-signed "
        "JSON lines; these commands verify it and summarise it for access reviews.",
    )
    sub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "verify",
        help="detect edited, deleted, reordered or truncated entries",
        description="Exit 0 if the log is intact; otherwise exit 1 naming the first bad sequence number.",
    )
    add_location_args(p)
    p.add_argument("--log", metavar="FILE", help="audit log file (default <data-dir>/audit/decrypt.log)")
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "report",
        help="access review: by user/role/field, denied attempts, unusual volume and hours",
        description="Summarise decrypt attempts in a window for the quarterly access review. "
        "Exits 1 (after printing) if the audit chain does not verify.",
    )
    add_location_args(p)
    p.add_argument("--log", metavar="FILE", help="audit log file (default <data-dir>/audit/decrypt.log)")
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
