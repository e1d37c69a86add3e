"""``errorgate lineage``: the data-lineage document of a config (Markdown or JSON)."""

from __future__ import annotations

import argparse
import sys

from errorgate.config import load_config
from errorgate.governance.lineage import build_lineage, render_json, render_markdown


def _run(args: argparse.Namespace) -> int:
    doc = build_lineage(load_config(args.config))
    sys.stdout.write(render_json(doc) if args.format == "json" else render_markdown(doc))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "lineage",
        help="data-lineage document generated from a config",
        description="Per pipeline: which fields enter, which processors read, transform, redact or encrypt "
        "them, which exporters receive them, and the retention classes applied.",
    )
    p.add_argument("--config", metavar="FILE", help="config file (default: the embedded default config)")
    p.add_argument("--format", choices=["md", "json"], default="md")
    p.set_defaults(func=_run)
