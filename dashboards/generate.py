"""Generates errorgate's Grafana dashboards (committed as ``dashboards/*.json``).

    python -m errorgate.dashboards.generate            # rewrite the committed JSON
    python -m errorgate.dashboards.generate --check    # exit 1 if the committed JSON is stale
    python -m errorgate.dashboards.generate --out DIR  # write elsewhere (e.g. a Grafana provisioning dir)

Metric names come from docs/METRICS.md. Fingerprints are not a metric label (their
cardinality is unbounded), so "top fingerprints" ranks error groups by service,
component and category; the fingerprint itself is on the spans and log records.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from errorgate.dashboards.panels.errors import error_overview, service_drilldown
from errorgate.dashboards.panels.incidents import incidents
from errorgate.dashboards.panels.operations import pipeline_health, privacy_governance, retention

HERE = Path(__file__).resolve().parent

DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "error-overview.json": error_overview,
    "service-drilldown.json": service_drilldown,
    "pipeline-health.json": pipeline_health,
    "privacy-governance.json": privacy_governance,
    "retention.json": retention,
    "incidents.json": incidents,
}


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model, as committed."""
    out: dict[str, dict[str, Any]] = {}
    for name, make in DASHBOARDS.items():
        model: dict[str, Any] = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        # Stable panel ids (the SDK leaves them 0): links and alert annotations refer to them.
        for i, panel in enumerate(model.get("panels", []), start=1):
            panel["id"] = i
        out[name] = model
    return out


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def iter_queries(model: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expr) of every Prometheus query in a dashboard, rows included."""
    stack = list(model.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", ""), target.get("refId", ""), target["expr"]


def write(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_dashboards().items():
        path = out_dir / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = HERE) -> list[str]:
    """Names of committed dashboard files that differ from the generator's output (or are missing)."""
    stale = []
    for name, model in build_dashboards().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(model):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m errorgate.dashboards.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON differs from the generator"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write to (default: the package's dashboards/)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(
                f"stale dashboards (run python -m errorgate.dashboards.generate): {', '.join(stale)}",
                file=sys.stderr,
            )
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date")
        return 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
