"""``errorgate report retro``: per-week counts of the top categories (an SVG chart in HTML, a
table in Markdown) and, per design standard, the services whose incidents most often fall in the
categories that standard covers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from errorgate.governance.standards import load_standards
from errorgate.incidents.retro import build_retro, to_html, to_markdown
from tests.support.incidents import Clock, EngineServer, alert, alertmanager_payload

MONDAY = datetime(2025, 6, 2, 10, tzinfo=UTC).timestamp()
DAY = 86400.0
# (day after MONDAY, service, category): three weeks of the payments team's alerts.
FIXTURE = [
    (0, "checkout", "timeout"), (1, "checkout", "timeout"), (2, "cart", "validation"),
    (7, "checkout", "connection_refused"), (8, "payments", "dependency_unavailable"), (9, "cart", "validation"),
    (14, "checkout", "validation"), (15, "cart", "data_corruption"),
]  # fmt: skip


@pytest.fixture
def retro(tmp_path: Path) -> Iterator[dict[str, Any]]:
    clock = Clock(MONDAY)
    srv = EngineServer(f"sqlite:///{tmp_path / 'i.db'}", clock=clock)
    for n, (day, service, category) in enumerate(FIXTURE):
        clock.now = MONDAY + day * DAY
        fp = f"fp{n}"
        payload = alertmanager_payload(alert(service, "P2", fingerprint=fp, category=category), group_key=fp)
        assert srv.post_alerts(payload).status == 200
    # Another team's incident in the same window counts for neither.
    other = alert("search", "P2", fingerprint="x", category="timeout", team="search")
    assert srv.post_alerts(alertmanager_payload(other, group_key="x")).status == 200
    since = datetime(2025, 6, 2, tzinfo=UTC).timestamp()
    yield build_retro(srv.engine, "payments", since, MONDAY + 16 * DAY, load_standards().for_category)
    srv.stop()


def test_weekly_counts_of_the_top_categories(retro: dict[str, Any]) -> None:
    assert retro["trends"] == {
        "weeks": ["2025-06-02", "2025-06-09", "2025-06-16"],
        "categories": {
            "validation": [1, 1, 1],
            "timeout": [2, 0, 0],
            "connection_refused": [0, 1, 0],
            "data_corruption": [0, 0, 1],
            "dependency_unavailable": [0, 1, 0],
        },
    }


def test_services_that_break_each_standard_most(retro: dict[str, Any]) -> None:
    ranked = {s["standard"]: [(x["service"], x["incidents"]) for x in s["services"]]
              for s in retro["standards_breakers"]}  # fmt: skip
    assert ranked["circuit_breaker"] == [("checkout", 3), ("payments", 1)]
    assert ranked["schema_validation"] == [("cart", 3), ("checkout", 1)]
    assert ranked["contract_tests"] == [("cart", 2), ("checkout", 1)]
    assert ranked["timeouts"] == [("checkout", 2)]
    assert ranked["graceful_degradation"] == [("checkout", 1), ("payments", 1)]
    assert "idempotency" not in ranked  # no incident in a category it covers
    # Most-broken standards first (ties by name), each with its text from standards.yaml.
    assert [s["standard"] for s in retro["standards_breakers"]][:4] == [
        "circuit_breaker", "retries_with_jitter", "schema_validation", "contract_tests"]  # fmt: skip
    assert retro["standards_breakers"][0]["text"].startswith("Calls to a failing dependency")


def test_html_has_the_trend_chart_and_markdown_the_tables(retro: dict[str, Any]) -> None:
    page = to_html(retro)
    svg = re.search(r"<svg .*?</svg>", page, re.S)
    assert svg is not None and "weekly incidents per category" in svg.group(0)
    lines = re.findall(r'<polyline class="cat-([a-z_]+)"[^>]*points="([^"]+)"', svg.group(0))
    assert [c for c, _ in lines] == list(retro["trends"]["categories"])
    assert all(len(points.split()) == 3 for _, points in lines)
    assert "<script" not in page
    assert "<td>circuit_breaker</td><td>checkout (3), payments (1)</td>" in page
    md = to_markdown(retro)
    assert (
        "| week | validation | timeout | connection_refused | data_corruption | dependency_unavailable |"
        in md
    )
    assert "| 2025-06-02 | 1 | 2 | 0 | 0 | 0 |" in md
    assert "- `circuit_breaker`: checkout (3), payments (1)" in md
