"""The committed Grafana dashboards: generated, consistent with docs/METRICS.md, valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.dashboards.generate import (
    DASHBOARDS,
    build_dashboards,
    iter_queries,
    main,
    render,
    stale_files,
)
from tests.support.prometheus import prometheus_factory, substitute_grafana  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "dashboards"
EXPECTED_UIDS = {
    "error-overview.json": "errorgate-errors",
    "service-drilldown.json": "errorgate-service",
    "pipeline-health.json": "errorgate-pipeline",
    "privacy-governance.json": "errorgate-privacy",
    "retention.json": "errorgate-retention",
    "incidents.json": "errorgate-incidents",
}


def committed() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARD_DIR / name).read_text()) for name in DASHBOARDS}


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in model["panels"] if p["type"] != "row"]


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "METRICS.md").read_text()
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| errorgate_")]
    names = {n for cell in first_cells for n in re.findall(r"\b(errorgate_[a-z_]+)\b", cell)}
    # Histograms are documented once and queried through their series.
    return names | {f"{n}{s}" for n in names if n.endswith("_seconds") for s in ("_bucket", "_sum", "_count")}


def test_committed_json_is_what_the_generator_produces() -> None:
    assert stale_files() == []
    assert set(DASHBOARD_DIR.glob("*.json")) == {DASHBOARD_DIR / n for n in DASHBOARDS}


def test_check_mode_fails_on_a_hand_edited_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "retention.json"
    model = json.loads(edited.read_text())
    model["title"] = "edited in the UI"
    edited.write_text(render(model))
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "retention.json" in capsys.readouterr().err


def test_check_runs_as_a_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "errorgate.dashboards.generate", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "6 dashboards up to date" in proc.stdout


def test_generation_is_deterministic() -> None:
    assert {n: render(m) for n, m in build_dashboards().items()} == {
        n: render(m) for n, m in build_dashboards().items()
    }


def test_stable_unique_uids_and_titles() -> None:
    models = committed()
    assert {name: m["uid"] for name, m in models.items()} == EXPECTED_UIDS
    assert len({m["title"] for m in models.values()}) == len(models)
    for m in models.values():
        assert "errorgate" in m["tags"]
        ids = [p["id"] for p in m["panels"]]
        assert ids == list(range(1, len(ids) + 1))


def test_template_variables() -> None:
    for name, m in committed().items():
        variables = {v["name"]: v for v in m["templating"]["list"]}
        assert list(variables) == ["datasource", "env", "team", "service"], name
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for var in ("env", "team", "service"):
            v = variables[var]
            assert v["type"] == "query" and v["multi"] is True and v["includeAll"] is True, (name, var)
            assert v["datasource"]["uid"] == "${datasource}"
        assert "errorgate_service_info" in variables["team"]["query"]
        assert variables["service"]["query"].startswith("label_values(errorgate_service_info{")
        assert 'team=~"$team"' in variables["service"]["query"]


def test_every_panel_has_a_unit_a_datasource_variable_and_queries() -> None:
    for name, m in committed().items():
        for p in panels(m):
            where = f"{name}: {p['title']}"
            assert p["fieldConfig"]["defaults"].get("unit"), where
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            assert p["targets"], where
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(set(ref_ids)) == len(ref_ids) and all(ref_ids), where
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", where


def test_range_vectors_use_rate_interval_range_or_a_burn_window() -> None:
    for name, m in committed().items():
        for title, _, expr in iter_queries(m):
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window in ("$__rate_interval", "$__range", "5m", "30m", "1h", "6h"), (
                    name,
                    title,
                    expr,
                )
                if window not in ("$__rate_interval", "$__range"):
                    assert title.startswith("Burn rate"), (name, title, expr)


def test_only_documented_metrics_are_charted() -> None:
    documented = documented_metrics()
    used: set[str] = set()
    for m in committed().values():
        for v in m["templating"]["list"]:
            used |= set(re.findall(r"\b(errorgate_[a-z_]+)", str(v.get("query", ""))))
        for _, _, expr in iter_queries(m):
            used |= set(re.findall(r"\b(errorgate_[a-z_]+)", expr))
    assert used - documented == set()
    # Every documented metric is on some dashboard.
    charted = used | {n.removesuffix("_bucket") for n in used}
    assert (
        documented - charted - {n for n in documented if n.endswith(("_sum", "_count", "_bucket"))} == set()
    )


def test_the_five_dashboards_cover_the_issue() -> None:
    titles = {name: {p["title"] for p in panels(m)} for name, m in committed().items()}
    assert {
        "Error rate by service",
        "Error ratio by service",
        "Top error groups",
        "New fingerprints",
    } <= titles["error-overview.json"]
    assert {
        "Errors by severity",
        "Errors by kind",
        "Errors by category",
        "Errors by service.version",
    } <= titles["error-overview.json"]
    assert {
        "Failing domains",
        "Cascade errors originated vs received",
        "Transient share of errors",
    } <= titles["service-drilldown.json"]
    assert {"Dead-lettered items", "Queue depth", "Exporter circuit state", "Processor latency"} <= titles[
        "pipeline-health.json"
    ]
    assert {"Redactions by entity type", "Redactions by rule", "Fail-closed events"} <= titles[
        "privacy-governance.json"
    ]
    # Decrypt attempts are audit-log only: no empty panel for them.
    assert not any("decrypt" in t.lower() for t in titles["privacy-governance.json"])
    assert {"Volume per retention class", "Items under legal hold (time range)"} <= titles["retention.json"]


def test_the_incident_dashboard_charts_response_times_paging_and_rollbacks() -> None:
    titles = {p["title"] for p in panels(committed()["incidents.json"])}
    assert {
        "Time to detect",
        "Time to acknowledge",
        "Time to resolve",
        "Page retries by outcome",
        "Pages given up",
        "Silence failures",
        "Incident engine leader",
        "Rollback notifications",
    } <= titles


def test_provider_yaml_points_at_the_errorgate_folder() -> None:
    provider = yaml.safe_load((DASHBOARD_DIR / "provider.yaml").read_text())
    assert provider["apiVersion"] == 1
    [p] = provider["providers"]
    assert p["type"] == "file" and p["folderUid"] == "errorgate" and p["options"]["path"]


def test_every_expression_is_valid_promql_on_a_real_prometheus(prometheus_factory) -> None:  # noqa: F811
    prom = prometheus_factory([])
    variables = {"env": ".*", "team": ["payments", "storefront"], "service": ["checkout", "frontend"]}
    count = 0
    for m in committed().values():
        for _title, _ref, expr in iter_queries(m):
            # An empty result is fine here; a syntax or type error raises PromQLError.
            prom.query(substitute_grafana(expr, variables))
            count += 1
        for v in m["templating"]["list"]:
            q = v.get("query", "")
            if q.startswith("label_values("):
                inner = re.fullmatch(r"label_values\((.*), (\w+)\)", q)
                assert inner, q
                prom.query(f"group by ({inner.group(2)}) ({substitute_grafana(inner.group(1), variables)})")
    assert count >= 40
