"""``errorgate oncall now|next|ical``: who is on call, from ``governance/oncall.yaml``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from errorgate.cli import CommandError


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from errorgate.governance.catalog import CatalogError, load_catalog
    from errorgate.governance.oncall import OnCallError, load_oncall

    try:
        return load_oncall(args.file, load_catalog(args.catalog))
    except (OnCallError, CatalogError) as e:
        raise CommandError(str(e)) from None


def _at(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"--at {value!r}: expected an ISO 8601 time like 2025-03-30T09:00:00+02:00"
        ) from None
    if at.tzinfo is None:
        raise CommandError(f"--at {value!r}: give a UTC offset (Z or +02:00)")
    return at


def _now(args: argparse.Namespace) -> int:
    from errorgate.governance.oncall import OnCallError

    oncall = _load(args)
    at = _at(args.at)
    try:
        answer = oncall.now(args.team, at)
        if args.command_kind == "next":
            answer = oncall.now(args.team, datetime.fromisoformat(str(answer["until"])))
    except OnCallError as e:
        raise CommandError(str(e)) from None
    if args.format == "json":
        print(json.dumps(answer))
    else:
        second = f", secondary {answer['secondary']}" if answer["secondary"] else ""
        print(f"{answer['team']}: primary {answer['primary']}{second} until {answer['until']}")
    return 0


def _ical(args: argparse.Namespace) -> int:
    from errorgate.governance.oncall import OnCallError, ical

    oncall = _load(args)
    try:
        text = ical(oncall, args.team, _at(args.at), days=args.days)
    except OnCallError as e:
        raise CommandError(str(e)) from None
    print(text, end="")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "oncall",
        help="who is on call (rotations in governance/oncall.yaml)",
        description="On-call rotations as code: who is on call now or next, and an iCalendar export.",
    )
    sub = p.add_subparsers(dest="oncall_command", metavar="ACTION", required=True)
    for name, helptext in (("now", "who is on call now (or --at)"), ("next", "who takes over next")):
        s = sub.add_parser(name, help=helptext, description=helptext)
        s.add_argument("--format", choices=("text", "json"), default="text")
        s.set_defaults(func=_now, command_kind=name)
    s = sub.add_parser("ical", help="the team's shifts as iCalendar", description="Print an iCalendar feed.")
    s.add_argument("--days", type=int, default=28, help="how far ahead (default 28)")
    s.set_defaults(func=_ical)
    for s in sub.choices.values():
        s.add_argument("--team", required=True, help="team key in oncall.yaml")
        s.add_argument("--at", help="instant (ISO 8601 with offset; default now)")
        s.add_argument("--file", help="oncall.yaml (default: the bundled governance/oncall.yaml)")
        s.add_argument("--catalog", help="services.yaml (default: the bundled governance/services.yaml)")
