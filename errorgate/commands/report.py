"""``errorgate report retro --team T --since 14d``: a team's retrospective from the incident store,
naming the design standards (governance/standards.yaml) its recurring error categories call for."""

from __future__ import annotations

import argparse
import json
import time

from errorgate.cli import CommandError
from errorgate.config import load_config, parse_duration


def _retro(args: argparse.Namespace) -> int:
    from errorgate.commands.incidents import _store
    from errorgate.governance.standards import StandardsError, load_standards
    from errorgate.incidents.engine import Engine
    from errorgate.incidents.retro import build_retro, to_html, to_markdown
    from errorgate.processors.classification.taxonomy import TaxonomyError, load_taxonomy

    try:
        window = parse_duration(args.since)
    except ValueError as e:
        raise CommandError(f"--since: {e}") from None
    try:
        standards = load_standards(args.standards, set(load_taxonomy(args.taxonomy).spec.categories))
    except (StandardsError, TaxonomyError) as e:
        raise CommandError(f"--standards: {e}") from None
    engine = Engine(_store(load_config(args.config)))
    now = time.time()
    retro = build_retro(engine, args.team, now - window, now, standards.for_category)
    render = {"json": lambda: json.dumps(retro, indent=2), "markdown": lambda: to_markdown(retro),
              "html": lambda: to_html(retro)}  # fmt: skip
    print(render[args.format]())
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="reports from the incident store (retro)",
                              description="Reports built from the incident engine's store.")  # fmt: skip
    sub = p.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    s = sub.add_parser("retro", help="a team's retrospective: recurring categories, KPIs, standards to apply")
    s.add_argument("--team", required=True, help="team (the incidents' team label)")
    s.add_argument("--since", default="14d", help="window, e.g. 14d (default 14d)")
    s.add_argument("--format", choices=("json", "markdown", "html"), default="markdown")
    s.add_argument("--standards", metavar="FILE", help="standards.yaml (default: the bundled one)")
    s.add_argument("--taxonomy", metavar="FILE", help="taxonomy.yaml (default: the bundled one)")
    s.add_argument("--config", metavar="FILE", help="config file (default: the embedded default)")
    s.set_defaults(func=_retro)
