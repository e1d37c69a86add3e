"""``errorgate report retro``: a team's incidents with KPIs equal to their timelines, recurring
vs new categories, open postmortems, and the standards (governance/standards.yaml) that the top
recurring categories call for; standards.yaml errors name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from errorgate.cli import main
from errorgate.config import default_config_text
from errorgate.governance.standards import StandardsError, load_standards
from tests.support.incidents import Clock, EngineServer, alert, alertmanager_payload

DAY = 86400.0


def _fire(srv: EngineServer, fp: str, category: str, service: str = "checkout", severity: str = "P2") -> str:
    payload = alertmanager_payload(alert(service, severity, fingerprint=fp, category=category), group_key=fp)
    assert srv.post_alerts(payload).status == 200
    return str(srv.incidents()[0]["id"])


def test_retro_names_recurring_categories_their_standards_and_kpis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock(1_765_000_000.0 - 30 * DAY)
    srv = EngineServer(f"sqlite:///{tmp_path / 'incidents.db'}", clock=clock)
    old = _fire(srv, "t-old", "timeout")  # a month ago: before the window
    srv.action(old, "resolve", by="alice")
    clock.now += 25 * DAY
    first = _fire(srv, "t1", "timeout")
    clock.now += 120
    srv.action(first, "ack", by="bob")
    clock.now += 600
    srv.action(first, "resolve", by="bob")
    clock.now += DAY
    _fire(srv, "v1", "validation")
    srv.engine.record(
        int(old), "postmortem", "engine", "filed", postmortem_key="PAY-7", postmortem_status="In Progress"
    )
    srv.stop()

    config = tmp_path / "errorgate.yaml"
    config.write_text(
        default_config_text() + f"\nincidents:\n  store: sqlite:///{tmp_path / 'incidents.db'}\n"
    )
    # The window is relative to now; the store's clock is fixed, so pick a window that covers 5 days.
    import time

    since = f"{int((time.time() - (clock.now - 2 * DAY)) / 60) + 1}m"
    assert (
        main(
            [
                "report",
                "retro",
                "--team",
                "payments",
                "--since",
                since,
                "--format",
                "json",
                "--config",
                str(config),
            ]
        )
        == 0
    )
    retro = json.loads(capsys.readouterr().out)
    assert [i["title"] for i in retro["incidents"]] == ["ErrorgateErrorRateHigh on checkout"] * 2
    assert retro["incidents"][0]["mtta_seconds"] == 120 and retro["incidents"][0]["mttr_seconds"] == 720
    top = {c["category"]: c for c in retro["top_categories"]}
    assert top["timeout"]["recurring"] is True  # seen before the window too
    assert top["validation"]["recurring"] is False and retro["new_categories"] == ["validation"]
    assert [s["name"] for s in top["timeout"]["standards"]] == [
        "timeouts",
        "retries_with_jitter",
        "circuit_breaker",
    ]
    assert retro["open_action_items"] == [{"incident": old, "postmortem": "PAY-7", "status": "In Progress"}]
    assert "alertmanager" in retro["source"].lower() or "Alertmanager" in retro["source"]
    for fmt, marker in (
        ("markdown", "standard `retries_with_jitter`"),
        ("html", "<code>schema_validation</code>"),
    ):
        assert (
            main(
                [
                    "report",
                    "retro",
                    "--team",
                    "payments",
                    "--since",
                    since,
                    "--format",
                    fmt,
                    "--config",
                    str(config),
                ]
            )
            == 0
        )
        assert marker in capsys.readouterr().out


def test_standards_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "standards.yaml"
    bad.write_text("standards: {timeouts: x}\ncategories: {timeout: [retries]}\n")
    with pytest.raises(StandardsError, match=r"categories\.timeout: standard 'retries'"):
        load_standards(bad)
    bad.write_text("standards: {timeouts: x}\ncategories: {timeuot: [timeouts]}\n")
    with pytest.raises(StandardsError, match=r"categories\.timeuot: not a category"):
        load_standards(bad, {"timeout"})


def test_bundled_standards_cover_every_taxonomy_category() -> None:
    from errorgate.processors.classification.taxonomy import load_taxonomy

    categories = set(load_taxonomy().spec.categories)
    standards = load_standards(None, categories)
    assert set(standards.spec.categories) == categories
