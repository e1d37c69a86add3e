"""``errorgate oncall now|next|ical|sync``: who is on call, from ``governance/oncall.yaml``, and
the rotations written into PagerDuty or Opsgenie."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

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


def _token(args: argparse.Namespace, default_env: str) -> str:
    """The API token from ``--token-file`` or the environment; never from the command line,
    where other users of the machine could read it."""
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise CommandError(f"--token-file {args.token_file}: cannot read it ({e.strerror})") from None
        if not token:
            raise CommandError(f"--token-file {args.token_file}: the file is empty")
        return token
    env = args.token_env or default_env
    token = os.environ.get(env, "").strip()
    if not token:
        raise CommandError(f"--token-env: set {env} to the {args.target} API token (or use --token-file)")
    return token


def _sync(args: argparse.Namespace) -> int:
    from errorgate.governance.oncall import OnCallError
    from errorgate.governance.oncall_sync import Plan, SyncError, opsgenie, pagerduty, teams_for

    oncall = _load(args)
    vendor = pagerduty if args.target == "pagerduty" else opsgenie
    try:
        teams = teams_for(oncall, args.target, args.team)
    except OnCallError as e:
        raise CommandError(str(e)) from None
    if not teams:
        raise CommandError(f"--team: no team in {oncall.source} lists {args.target} under channels")
    http = vendor.connect(args.url or vendor.API, _token(args, vendor.TOKEN_ENV), timeout=args.timeout)
    plan = Plan(sys.stdout, args.dry_run)
    runner = pagerduty.PagerDutySync if args.target == "pagerduty" else opsgenie.OpsgenieSync
    try:
        runner(http, oncall, plan, _at(args.at)).run(teams)
    except SyncError as e:
        raise CommandError(str(e)) from None
    finally:
        http.close()
    print(("dry run: " if args.dry_run else "") + plan.result.summary())
    return 0


def _add_sync(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser(
        "sync",
        help="write the rotations and escalation chains into PagerDuty or Opsgenie",
        description="Reads the tool's schedules and escalation policies first, prints what differs "
        "(create/update/unchanged per object) and writes only that; --dry-run writes nothing. "
        "Objects are named errorgate-<rotation|team> and tagged in their description; hand-made "
        "objects are never changed. Members need people.<name>.email in oncall.yaml.",
    )
    s.add_argument("--target", required=True, choices=("pagerduty", "opsgenie"))
    s.add_argument("--team", help="only this team (default: every team whose channels list the target)")
    s.add_argument("--dry-run", action="store_true", help="print the plan and diffs, write nothing")
    s.add_argument(
        "--url", help="API base URL (default https://api.pagerduty.com / https://api.opsgenie.com)"
    )
    s.add_argument(
        "--token-env",
        help="environment variable with the API token (default ERRORGATE_PAGERDUTY_API_TOKEN / "
        "ERRORGATE_OPSGENIE_API_KEY)",
    )
    s.add_argument("--token-file", help="file holding the API token (instead of the environment)")
    s.add_argument("--timeout", type=float, default=15.0, help="seconds per HTTP request (default 15)")
    s.add_argument("--at", help="instant overrides are compared with (ISO 8601 with offset; default now)")
    s.add_argument("--file", help="oncall.yaml (default: the bundled governance/oncall.yaml)")
    s.add_argument("--catalog", help="services.yaml (default: the bundled governance/services.yaml)")
    s.set_defaults(func=_sync)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "oncall",
        help="who is on call (rotations in governance/oncall.yaml)",
        description="On-call rotations as code: who is on call now or next, an iCalendar export, and a "
        "sync into PagerDuty or Opsgenie.",
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
    _add_sync(sub)
