"""``errorgate alerts generate [--check]`` and ``errorgate alerts suppress``.

``suppress`` gives Grafana users (whose alerting has no inhibition) the effect of the
Alertmanager inhibition rule: a silence on the P3/P4 alerts of the services caught up in a
multi-service incident, created and expired through the Alertmanager v2 API. Grafana's built-in
Alertmanager serves the same API under ``<grafana>/api/alertmanager/grafana``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from errorgate.cli import CommandError
from errorgate.config import parse_duration

TOKEN_ENV = "ERRORGATE_ALERTMANAGER_TOKEN"
CREATED_BY = "errorgate alerts suppress"


def _generate(args: argparse.Namespace) -> int:
    from errorgate.alert_rules.generate import stale_files, write_all

    if args.check:
        stale = stale_files()
        if stale:
            raise CommandError(
                f"generated alert files are out of date: {', '.join(stale)} (run errorgate alerts generate)"
            )
        print("alert rules, Alertmanager and Grafana provisioning are up to date")
        return 0
    written = write_all()
    print(f"wrote {len(written)} file(s)" + (f": {', '.join(written)}" if written else " (all up to date)"))
    return 0


def _request(method: str, url: str, token: str | None, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip().splitlines()
        raise CommandError(
            f"{method} {url}: HTTP {e.code} {detail[0][:200] if detail else e.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CommandError(f"--alertmanager {url.split('/api/')[0]}: cannot connect ({reason})") from None
    return json.loads(text) if text.strip() else None


def silence_body(
    services: list[str],
    severities: list[str],
    duration_s: float,
    incident: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The silence that stands in for the inhibition rule (the engine makes the same one)."""
    from errorgate.incidents.silences import silence_body as body

    return body(services, severities, duration_s, incident, now, created_by=CREATED_BY)


def _suppress(args: argparse.Namespace) -> int:
    base = args.alertmanager.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CommandError(f"--alertmanager {args.alertmanager!r}: expected an http:// or https:// URL")
    token = os.environ.get(TOKEN_ENV)
    if args.expire:
        silence_id = urllib.parse.quote(args.expire, safe="")
        _request("DELETE", f"{base}/api/v2/silence/{silence_id}", token)
        print(f"expired silence {args.expire}")
        return 0
    if not args.service:
        raise CommandError("--service: name at least one service (or use --expire ID)")
    try:
        duration = parse_duration(args.duration)
    except ValueError as e:
        raise CommandError(f"--duration: {e}") from None
    if duration <= 0:
        raise CommandError("--duration: must be positive")
    severities = args.severities.split(",") if args.severities else _policy_severities()
    for sev in severities:
        if sev not in ("P1", "P2", "P3", "P4"):
            raise CommandError(f"--severities: {sev!r} is not one of P1, P2, P3, P4")
    body = silence_body(sorted(set(args.service)), severities, duration, args.incident)
    reply = _request("POST", f"{base}/api/v2/silences", token, body)
    created = (reply or {}).get("silenceID")
    if not created:
        raise CommandError(f"--alertmanager {base}: the reply carried no silenceID")
    print(created)
    print(
        f"silenced {'/'.join(severities)} alerts of {', '.join(sorted(set(args.service)))} until {body['endsAt']}",
        file=sys.stderr,
    )
    return 0


def _policy_severities() -> list[str]:
    from errorgate.alert_rules.policy import load_policy

    return list(load_policy().incident.inhibit_severities)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "alerts",
        help="generate alert rules/routing; suppress minor alerts during an incident",
        description="Alert rules, Alertmanager routing and Grafana alerting provisioning.",
    )
    sub = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    g = sub.add_parser(
        "generate",
        help="regenerate alert_rules/ from the service catalog and alert_rules/policy.yaml",
        description="Write Prometheus rules, promtool fixtures, alertmanager.yml and Grafana provisioning.",
    )
    g.add_argument("--check", action="store_true", help="only check that the committed files are up to date")
    g.set_defaults(func=_generate)
    s = sub.add_parser(
        "suppress",
        help="silence P3/P4 alerts of services in a multi-service incident (or expire such a silence)",
        description="Create (or with --expire, expire) an Alertmanager silence through its v2 API: the "
        "equivalent of the inhibition rule for Grafana alerting. Prints the silence id. A bearer token "
        f"(e.g. a Grafana service account token) is read from ${TOKEN_ENV} when set.",
    )
    s.add_argument("--alertmanager", required=True, metavar="URL", help="Alertmanager base URL")
    s.add_argument("--service", action="append", metavar="S", help="service to suppress (repeatable)")
    s.add_argument("--incident", metavar="ID", help="incident id, recorded in the silence comment")
    s.add_argument("--duration", default="2h", help="how long the silence lasts (default 2h)")
    s.add_argument(
        "--severities",
        metavar="P3,P4",
        help="severities to silence (default: policy incident.inhibit_severities)",
    )
    s.add_argument("--expire", metavar="ID", help="expire the silence with this id instead of creating one")
    s.set_defaults(func=_suppress)
