"""``errorgate grafana push|export``: put the dashboards and alerting into Grafana.

``push`` talks to a live Grafana's HTTP API (idempotent; ``--dry-run`` prints the diff);
``export DIR`` writes a file-provisioning tree instead::

    DIR/provisioning/dashboards/errorgate.yaml   -> /etc/grafana/provisioning/dashboards/
    DIR/provisioning/alerting/*.yaml             -> /etc/grafana/provisioning/alerting/
    DIR/dashboards/errorgate/*.json              -> /var/lib/grafana/dashboards/errorgate/
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

TOKEN_ENV = "GRAFANA_TOKEN"


class GrafanaCommandError(ValueError):
    """Reported by the CLI as one line (it catches ValueError)."""


def _provisioning(args: argparse.Namespace) -> dict[str, Any]:
    from errorgate.alert_rules.grafana import build_grafana_provisioning

    return build_grafana_provisioning(args.catalog, args.policy)


def _push(args: argparse.Namespace) -> int:
    from errorgate.dashboards.generate import build_dashboards
    from errorgate.dashboards.push import PushError, connect, push

    token = args.token or os.environ.get(TOKEN_ENV, "")
    try:
        api = connect(args.url, token, timeout=args.timeout)
        dashboards = list(build_dashboards().values())
        provisioning = None if args.dashboards_only else _provisioning(args)
        result = push(
            api,
            dashboards,
            provisioning,
            folder=args.folder,
            dry_run=args.dry_run,
            out=sys.stdout,
            secrets_dir=Path(args.secrets_dir) if args.secrets_dir else None,
        )
    except PushError as e:
        raise GrafanaCommandError(str(e)) from None
    print(("dry run: " if args.dry_run else "") + result.summary())
    return 0


def _export(args: argparse.Namespace) -> int:
    from errorgate.alert_rules.generate import render_all
    from errorgate.dashboards.generate import HERE, build_dashboards, render

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise GrafanaCommandError(f"DIR {out}: exists and is not a directory")
    dash_dir = out / "dashboards" / "errorgate"
    prov_dash = out / "provisioning" / "dashboards"
    prov_alert = out / "provisioning" / "alerting"
    for d in (dash_dir, prov_dash, prov_alert):
        d.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_dashboards().items():
        (dash_dir / name).write_text(render(model), encoding="utf-8")
        written.append(dash_dir / name)
    shutil.copyfile(HERE / "provider.yaml", prov_dash / "errorgate.yaml")
    written.append(prov_dash / "errorgate.yaml")
    for rel, text in render_all(args.catalog, args.policy).items():
        if rel.startswith("grafana/"):
            target = prov_alert / rel.removeprefix("grafana/")
            target.write_text(text, encoding="utf-8")
            written.append(target)
    for path in written:
        print(path)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    grafana = subparsers.add_parser(
        "grafana",
        help="push dashboards and alerting to Grafana, or export provisioning files",
        description="Install errorgate's dashboards and Grafana alerting (rule groups, contact points, "
        "notification policies, mute timings, templates).",
    )
    sub = grafana.add_subparsers(dest="grafana_command", metavar="SUBCOMMAND", required=True)

    def catalog_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--catalog", metavar="FILE", help="service catalog (default: the bundled services.yaml)"
        )
        p.add_argument(
            "--policy", metavar="FILE", help="alert policy (default: the bundled alert_rules/policy.yaml)"
        )

    p = sub.add_parser(
        "push",
        help="create/update everything in a live Grafana through its HTTP API",
        description="Idempotent: reads each object first and writes only what differs; a second push "
        "reports 'no changes'. Needs a service-account token with Editor rights on the folder and "
        "alerting provisioning rights.",
    )
    p.add_argument("--url", required=True, help="Grafana base URL, e.g. https://grafana.example.com")
    p.add_argument(
        "--token",
        help=f"service-account token (default: ${TOKEN_ENV}; prefer the variable, command lines are visible)",
    )
    p.add_argument("--folder", default="errorgate", metavar="NAME", help="folder for dashboards and rules")
    p.add_argument("--dry-run", action="store_true", help="print a unified diff per object, change nothing")
    p.add_argument("--dashboards-only", action="store_true", help="leave alerting objects alone")
    p.add_argument(
        "--secrets-dir",
        metavar="DIR",
        help="read the contact points' $__file{...} secrets by file name from DIR (default: their own paths)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (default 10)")
    catalog_args(p)
    p.set_defaults(func=_push)

    p = sub.add_parser(
        "export",
        help="write Grafana file-provisioning files into DIR",
        description="Writes DIR/dashboards/errorgate/*.json, DIR/provisioning/dashboards/errorgate.yaml and "
        "DIR/provisioning/alerting/*.yaml; mount DIR/provisioning at /etc/grafana/provisioning and "
        "DIR/dashboards at /var/lib/grafana/dashboards.",
    )
    p.add_argument("dir", metavar="DIR")
    catalog_args(p)
    p.set_defaults(func=_export)
