"""MTTD / MTTA / MTTR from the store, as JSON, Markdown or HTML with an inline SVG trend chart.

MTTD: first error -> incident opened (detection). MTTA: opened -> acknowledged.
MTTR: opened -> resolved. Medians, so one forgotten incident does not hide the usual case."""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import UTC, datetime
from statistics import median
from typing import Any

from errorgate.incidents.actions import ActionItem, counts
from errorgate.incidents.engine import Incident

KPIS = ("mttd_seconds", "mtta_seconds", "mttr_seconds")


def kpis(inc: Incident) -> dict[str, float | None]:
    """One incident's times, exactly as its timeline records them."""
    return {
        "mttd_seconds": max(0.0, inc.opened_at - inc.first_error_at),
        "mtta_seconds": None if inc.acknowledged_at is None else inc.acknowledged_at - inc.opened_at,
        "mttr_seconds": None if inc.resolved_at is None else inc.resolved_at - inc.opened_at,
    }


def _medians(items: list[Incident]) -> dict[str, Any]:
    values: dict[str, list[float]] = {k: [] for k in KPIS}
    for inc in items:
        for key, value in kpis(inc).items():
            if value is not None:
                values[key].append(value)
    out: dict[str, Any] = {k: (median(v) if v else None) for k, v in values.items()}
    out["incidents"] = len(items)
    return out


def action_summary(items: list[ActionItem], now: float) -> dict[str, Any]:
    """Open, closed and overdue action items, overall and per owning team."""
    teams: dict[str, list[ActionItem]] = defaultdict(list)
    for item in items:
        teams[item.team].append(item)
    return {**counts(items, now), "by_team": {t: counts(v, now) for t, v in sorted(teams.items())}}


def build_report(
    items: list[Incident], since: float, now: float, action_items: list[ActionItem] | None = None
) -> dict[str, Any]:
    by: dict[str, dict[str, list[Incident]]] = {"team": defaultdict(list), "service": defaultdict(list),
                                                 "severity": defaultdict(list)}  # fmt: skip
    days: dict[str, list[Incident]] = defaultdict(list)
    for inc in items:
        by["team"][inc.team].append(inc)
        by["severity"][inc.severity].append(inc)
        for service in inc.services or ["-"]:
            by["service"][service].append(inc)
        days[datetime.fromtimestamp(inc.opened_at, UTC).date().isoformat()].append(inc)
    report = _medians(items)
    report.update(
        {
            "since": datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z"),
            "until": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
            "by_team": {k: _medians(v) for k, v in sorted(by["team"].items())},
            "by_service": {k: _medians(v) for k, v in sorted(by["service"].items())},
            "by_severity": {k: _medians(v) for k, v in sorted(by["severity"].items())},
            "by_day": {k: _medians(v) for k, v in sorted(days.items())},
            "action_items": action_summary(action_items or [], now),
        }
    )
    return report


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [("all", "all", report)]
    for dim in ("team", "service", "severity"):
        rows += [(dim, name, r) for name, r in report[f"by_{dim}"].items()]
    return rows


def to_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Incident report {report['since']} – {report['until']}",
        "",
        "| by | name | incidents | MTTD | MTTA | MTTR |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for dim, name, r in _rows(report):
        lines.append(
            f"| {dim} | {name} | {r['incidents']} | {fmt_seconds(r['mttd_seconds'])} | "
            f"{fmt_seconds(r['mtta_seconds'])} | {fmt_seconds(r['mttr_seconds'])} |"
        )
    lines += ["", "## Action items", "", "| team | open | closed | overdue |", "|---|---:|---:|---:|"]
    a = report["action_items"]
    for team, c in [("all", a), *a["by_team"].items()]:
        lines.append(f"| {team} | {c['open']} | {c['closed']} | {c['overdue']} |")
    return "\n".join(lines) + "\n"


def trend_svg(by_day: dict[str, dict[str, Any]], width: int = 640, height: int = 220) -> str:
    """Daily median MTTD/MTTA/MTTR as three polylines (minutes); no script, no external assets."""
    days = list(by_day)
    colors = {"mttd_seconds": "#d62728", "mtta_seconds": "#ff7f0e", "mttr_seconds": "#1f77b4"}
    peak = max([v for d in by_day.values() for k in KPIS if (v := d[k]) is not None] or [1.0])
    pad = 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="daily median MTTD, MTTA, MTTR">']  # fmt: skip
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - 5}" y2="{height - pad}" stroke="#888"/>')
    for key, color in colors.items():
        points = []
        for i, day in enumerate(days):
            value = by_day[day][key]
            if value is None:
                continue
            x = pad + (i + 0.5) * (width - pad - 5) / max(1, len(days))
            y = height - pad - value / peak * (height - 2 * pad)
            points.append(f"{x:.1f},{y:.1f}")
        if points:
            parts.append(
                f'<polyline class="{key}" fill="none" stroke="{color}" stroke-width="2" points="{" ".join(points)}"/>'
            )
            for p in points:
                cx, cy = p.split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
        parts.append(
            f'<text x="{pad + 120 * list(colors).index(key)}" y="14" fill="{color}" font-size="12">'
            f"{key.split('_')[0].upper()}</text>"
        )
    parts.append(f'<text x="2" y="{pad}" font-size="10">{html.escape(fmt_seconds(peak))}</text></svg>')
    return "".join(parts)


def to_html(report: dict[str, Any]) -> str:
    a = report["action_items"]
    rows = "".join(
        f"<tr><td>{html.escape(dim)}</td><td>{html.escape(name)}</td><td>{r['incidents']}</td>"
        f"<td>{fmt_seconds(r['mttd_seconds'])}</td><td>{fmt_seconds(r['mtta_seconds'])}</td><td>{fmt_seconds(r['mttr_seconds'])}</td></tr>"
        for dim, name, r in _rows(report)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>errorgate incident report</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>Incidents {html.escape(report['since'])} – {html.escape(report['until'])}</h1>"
        f"<figure>{trend_svg(report['by_day'])}<figcaption>daily medians</figcaption></figure>"
        "<table><tr><th>by</th><th>name</th><th>incidents</th><th>MTTD</th><th>MTTA</th><th>MTTR</th></tr>"
        f"{rows}</table><h2>Action items</h2><p>open {a['open']}, closed {a['closed']}, "
        f"overdue {a['overdue']}</p></body></html>"
    )
