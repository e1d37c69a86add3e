"""The retrospective's weekly trend chart: one polyline per top category, inline SVG with no
script and no external assets (like the incidents report's trend chart)."""

from __future__ import annotations

import html
from typing import Any

# Distinguishable on white, in the order the categories rank.
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def weekly_svg(trends: dict[str, Any], width: int = 640, height: int = 220) -> str:
    """``trends`` is the retro's ``{"weeks": [...], "categories": {name: [count per week]}}``."""
    weeks, categories = trends["weeks"], trends["categories"]
    peak = max([n for counts in categories.values() for n in counts] or [1]) or 1
    pad, span = 30, width - 35
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="weekly incidents per category">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - 5}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="2" y="{pad}" font-size="10">{peak}</text>']  # fmt: skip
    for n, week in enumerate(weeks):
        x = pad + (n + 0.5) * span / max(1, len(weeks))
        parts.append(
            f'<text x="{x:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">{html.escape(week)}</text>'
        )
    for i, (name, counts) in enumerate(categories.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(
            f"{pad + (n + 0.5) * span / max(1, len(weeks)):.1f},{height - pad - c / peak * (height - 2 * pad):.1f}"
            for n, c in enumerate(counts)
        )
        label = html.escape(name)
        parts.append(
            f'<polyline class="cat-{label}" fill="none" stroke="{color}" stroke-width="2" points="{points}"/>'
        )
        parts.append(f'<text x="{pad + 110 * i}" y="14" fill="{color}" font-size="12">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)
