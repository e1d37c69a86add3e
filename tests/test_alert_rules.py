"""Generated alert rules, routing and Grafana provisioning: up to date, valid for the real
promtool/amtool, and routing every team x severity x kind to the intended receivers."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.alert_rules.generate import render_all, stale_files
from errorgate.alert_rules.grafana import build_grafana_provisioning
from errorgate.alert_rules.policy import PolicyError, load_policy
from errorgate.cli import main as cli_main
from errorgate.governance.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alert_rules"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool missing (make system-deps)")
needs_amtool = pytest.mark.skipif(not Path(AMTOOL).exists(), reason="amtool missing (make system-deps)")


def _run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_committed_files_equal_generator_output() -> None:
    assert stale_files() == [], "run `errorgate alerts generate` and commit the result"
    assert cli_main(["alerts", "generate", "--check"]) == 0


def test_generate_check_names_stale_files(tmp_path: Path) -> None:
    for rel, content in render_all().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    assert stale_files(tmp_path) == []
    (tmp_path / "alertmanager.yml").write_text("route: {}\n")
    assert stale_files(tmp_path) == ["alertmanager.yml"]


# ------------------------------------------------------------------ Prometheus rules


@needs_promtool
def test_promtool_check_rules() -> None:
    files = sorted(str(p) for p in (RULES / "prometheus").glob("*.rules.yml"))
    assert len(files) == 3
    result = _run(PROMTOOL, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 3


@needs_promtool
@pytest.mark.parametrize("fixture", ["errors.test.yml", "slo.test.yml", "pipeline.test.yml"])
def test_promtool_unit_tests_pass(fixture: str) -> None:
    result = _run(PROMTOOL, "test", "rules", f"tests/{fixture}", cwd=RULES)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _mutated_run(tmp_path: Path, fixture: str, catalog_text: str | None, policy_text: str | None) -> str:
    """Rules generated from changed sources, tested against the committed fixtures."""
    catalog = policy = None
    if catalog_text is not None:
        (tmp_path / "services.yaml").write_text(catalog_text)
        catalog = str(tmp_path / "services.yaml")
    if policy_text is not None:
        (tmp_path / "policy.yaml").write_text(policy_text)
        policy = str(tmp_path / "policy.yaml")
    for rel, content in render_all(catalog, policy).items():
        if rel.startswith("prometheus/"):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(content)
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES / "tests" / fixture, tmp_path / "tests" / fixture)
    result = _run(PROMTOOL, "test", "rules", f"tests/{fixture}", cwd=tmp_path)
    assert result.returncode != 0, "fixtures did not notice a moved threshold"
    return result.stdout + result.stderr


@needs_promtool
def test_fixtures_catch_a_moved_error_rate_threshold(tmp_path: Path) -> None:
    catalog = (ROOT / "governance" / "services.yaml").read_text()
    moved = catalog.replace("alert_per_minute: 30,", "alert_per_minute: 31,")
    assert moved != catalog
    out = _mutated_run(tmp_path, "errors.test.yml", moved, None)
    assert 'service="checkout"' in out


@needs_promtool
def test_fixtures_catch_a_changed_burn_factor(tmp_path: Path) -> None:
    policy = (RULES / "policy.yaml").read_text()
    moved = policy.replace("factor: 14.4,", "factor: 14,")
    assert moved != policy
    out = _mutated_run(tmp_path, "slo.test.yml", None, moved)
    assert 'slo_window="fast"' in out


def test_every_alert_rule_carries_the_routing_labels() -> None:
    catalog = load_catalog()
    teams = set(catalog.teams) | set(catalog.owners)
    names = set()
    for path in (RULES / "prometheus").glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                labels = rule["labels"]
                names.add(rule["alert"])
                assert labels["severity"] in {"P1", "P2", "P3", "P4"}, rule
                assert labels["team"] in teams, rule
                # kind/category/service come from the rule or, per series, from `by (...)`
                for label in ("kind", "category", "service"):
                    assert label in labels or re.search(rf"by \([^)]*\b{label}\b", rule["expr"]), (
                        label,
                        rule,
                    )
                # Summaries may only print labels (never $value or payload-derived annotations).
                assert re.fullmatch(r"([^{}]|\{\{ \$labels\.\w+ \}\})*", rule["annotations"]["summary"]), rule
    assert names == {
        "ErrorgateErrorRateHigh",
        "ErrorgateErrorRateReview",
        "ErrorgateErrorBudgetBurn",
        "ErrorgateServiceInIncident",
        "ErrorgateDeadLetters",
        "ErrorgateExporterCircuitOpen",
        "ErrorgateQueueFilling",
        "ErrorgateRedactionFailClosed",
        "ErrorgateRefusingData",
    }


def test_burn_rate_windows_follow_the_sre_workbook() -> None:
    rules = yaml.safe_load((RULES / "prometheus" / "errorgate-slo.rules.yml").read_text())
    checkout = {
        r["labels"]["slo_window"]: r
        for g in rules["groups"]
        for r in g["rules"]
        if r["labels"].get("service") == "checkout"
    }
    # checkout: SLO 0.999 -> budget 0.001; tier 1 -> P1/P2/P3
    assert "[1h]" in checkout["fast"]["expr"] and "[5m]" in checkout["fast"]["expr"]
    assert checkout["fast"]["expr"].count("> 0.0144") == 2 and checkout["fast"]["labels"]["severity"] == "P1"
    assert "[6h]" in checkout["slow"]["expr"] and "[30m]" in checkout["slow"]["expr"]
    assert checkout["slow"]["expr"].count("> 0.006") == 2 and checkout["slow"]["labels"]["severity"] == "P2"
    assert "[3d]" in checkout["ticket"]["expr"] and "[6h]" in checkout["ticket"]["expr"]
    assert (
        checkout["ticket"]["expr"].count("> 0.001") == 2 and checkout["ticket"]["labels"]["severity"] == "P3"
    )


def test_policy_errors_name_the_key(tmp_path: Path) -> None:
    text = (
        (RULES / "policy.yaml")
        .read_text()
        .replace("P2: {channels: [opsgenie, slack]", "P2: {channels: [pager]")
    )
    (tmp_path / "policy.yaml").write_text(text)
    with pytest.raises(PolicyError, match=r"routing\.severities\.P2\.channels"):
        load_policy(tmp_path / "policy.yaml")
    (tmp_path / "policy.yaml").write_text(
        (RULES / "policy.yaml").read_text().replace("evaluation_interval: 1m", "evaluation_intervall: 1m")
    )
    with pytest.raises(PolicyError, match="evaluation_intervall: unknown key"):
        load_policy(tmp_path / "policy.yaml")


# ------------------------------------------------------------------ Alertmanager routing


@needs_amtool
def test_amtool_check_config() -> None:
    result = _run(AMTOOL, "check-config", str(RULES / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 inhibit rules" in result.stdout and "1 templates" in result.stdout


def _expected_receivers(team: str, severity: str, kind: str) -> str:
    """The routing spec, read from the sources (not from the generator)."""
    policy = yaml.safe_load((RULES / "policy.yaml").read_text())["routing"]
    catalog = yaml.safe_load((ROOT / "governance" / "services.yaml").read_text())
    escalation = catalog["teams"][team]["escalation"]["default"]
    channels = policy["kinds"].get(kind, {}).get(severity) or policy["severities"][severity]["channels"]
    names = {
        "pagerduty": [f"{team}-pagerduty-primary"],
        "opsgenie": [f"{team}-opsgenie"] if escalation.get("opsgenie_team") else [],
        "slack": [f"{team}-slack"],
        "webhook": [f"{team}-webhook"],
    }
    receivers = [r for channel in channels for r in names[channel]]
    if "pagerduty" in channels and policy["severities"][severity].get("escalate"):
        # An ``oncall:`` reference pages the rotation's secondary and lead levels (oncall.yaml).
        levels = ("secondary", "lead")
        receivers += [
            f"{team}-pagerduty-{lv}" for lv in levels if escalation.get(lv) or escalation.get("oncall")
        ]
    return ",".join(receivers)


TEAMS = ["payments", "storefront", "platform"]
SEVERITIES = ["P1", "P2", "P3", "P4"]
KINDS = ["transient", "intermittent", "persistent", "cascading", "slo", "pipeline"]

# A few cases spelled out, so the table above is itself checked against intent.
LITERAL_CASES = [
    (
        {"team": "payments", "severity": "P1", "kind": "persistent"},
        "payments-pagerduty-primary,payments-opsgenie,payments-slack,payments-pagerduty-secondary,payments-pagerduty-lead",
    ),
    (
        {"team": "platform", "severity": "P1", "kind": "slo"},
        "platform-pagerduty-primary,platform-slack,platform-pagerduty-secondary,platform-pagerduty-lead",
    ),
    (
        {"team": "payments", "severity": "P1", "kind": "transient"},
        "payments-opsgenie,payments-slack,payments-webhook",
    ),
    ({"team": "platform", "severity": "P1", "kind": "transient"}, "platform-slack,platform-webhook"),
    (
        {"team": "storefront", "severity": "P1", "kind": "cascading"},
        "storefront-pagerduty-primary,storefront-opsgenie,storefront-slack,storefront-webhook,"
        "storefront-pagerduty-secondary,storefront-pagerduty-lead",
    ),
    ({"team": "storefront", "severity": "P2", "kind": "transient"}, "storefront-slack"),
    ({"team": "platform", "severity": "P2", "kind": "pipeline"}, "platform-slack"),
    ({"team": "payments", "severity": "P3", "kind": "persistent"}, "payments-slack,payments-webhook"),
    ({"team": "storefront", "severity": "P4", "kind": "intermittent"}, "storefront-webhook"),
    (
        {
            "team": "payments",
            "severity": "P2",
            "alertname": "ErrorgateServiceInIncident",
            "kind": "cascading",
        },
        "errorgate-incident-marker",
    ),
    ({"team": "nobody", "severity": "P1", "kind": "persistent"}, "errorgate-fallback"),
]


def _route_test(
    labels: dict[str, str], expected: str
) -> tuple[dict[str, str], str, subprocess.CompletedProcess[str]]:
    args = [f"{k}={v}" for k, v in labels.items()]
    result = _run(
        AMTOOL,
        "config",
        "routes",
        "test",
        f"--config.file={RULES / 'alertmanager.yml'}",
        f"--verify.receivers={expected}",
        *args,
    )
    return labels, expected, result


@needs_amtool
def test_every_team_severity_kind_reaches_the_intended_receivers() -> None:
    cases = [
        (
            {"team": t, "severity": s, "kind": k, "service": "svc", "alertname": "ErrorgateErrorRateHigh"},
            _expected_receivers(t, s, k),
        )
        for t in TEAMS
        for s in SEVERITIES
        for k in KINDS
    ]
    cases += LITERAL_CASES
    assert len(cases) == len(TEAMS) * len(SEVERITIES) * len(KINDS) + len(LITERAL_CASES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: _route_test(*c), cases))
    failures = [
        f"{labels} -> expected {exp}: {r.stdout.strip()}" for labels, exp, r in results if r.returncode != 0
    ]
    assert not failures, "\n".join(failures)


@needs_amtool
def test_amtool_route_verification_can_fail() -> None:
    _, _, result = _route_test({"team": "payments", "severity": "P1", "kind": "persistent"}, "payments-slack")
    assert result.returncode != 0


def test_p1_always_reaches_two_receivers_and_inhibition_targets_minor_severities() -> None:
    am = yaml.safe_load((RULES / "alertmanager.yml").read_text())
    [inhibit] = am["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="ErrorgateServiceInIncident"']
    assert 'severity=~"P3|P4"' in inhibit["target_matchers"] and inhibit["equal"] == ["service"]
    for team in TEAMS:
        for kind in KINDS:
            assert len(_expected_receivers(team, "P1", kind).split(",")) >= 2, (team, kind)
    assert am["route"]["group_by"] == ["team", "service", "severity"]
    assert [t["name"] for t in am["time_intervals"]] == ["weekly-maintenance"]


def test_generation_refuses_a_p1_that_reaches_one_receiver(tmp_path: Path) -> None:
    text = (RULES / "policy.yaml").read_text()
    moved = text.replace(
        "P1: {channels: [pagerduty, opsgenie, slack]", "P1: {channels: [pagerduty, opsgenie]"
    )
    assert moved != text
    (tmp_path / "policy.yaml").write_text(moved)
    # platform has no opsgenie_team: its P1 would only page PagerDuty (escalations come later)
    with pytest.raises(ValueError, match=r"routing\.severities\.P1\.channels: team 'platform'"):
        render_all(policy_path=str(tmp_path / "policy.yaml"))


# ------------------------------------------------------------------ Grafana provisioning


def _grafana_files() -> dict[str, Any]:
    return {p.name: yaml.safe_load(p.read_text()) for p in (RULES / "grafana").glob("*.yaml")}


def _walk(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [route, *(r for child in route.get("routes", []) for r in _walk(child))]


def test_grafana_provisioning_is_structurally_sound() -> None:
    files = _grafana_files()
    assert set(files) == {
        "rules.yaml",
        "contact-points.yaml",
        "policies.yaml",
        "mute-timings.yaml",
        "templates.yaml",
    }
    assert all(doc["apiVersion"] == 1 for doc in files.values())
    rules = [r for g in files["rules.yaml"]["groups"] for r in g["rules"]]
    uids = [r["uid"] for r in rules]
    titles = [r["title"] for r in rules]
    assert len(titles) == len(set(titles)), "Grafana wants unique rule titles per folder"
    assert len(uids) == len(set(uids)) and all(len(u) <= 40 for u in uids)
    for rule in rules:
        refs = [d["refId"] for d in rule["data"]]
        assert len(refs) == len(set(refs))
        assert rule["condition"] in refs, rule["title"]
        for d in rule["data"]:
            if d["datasourceUid"] == "__expr__":
                assert d["model"]["expression"] in refs
        assert {"severity", "team"} <= set(rule["labels"])
        assert rule["noDataState"] in {"OK", "NoData", "Alerting"} and rule["for"]

    points = files["contact-points.yaml"]["contactPoints"]
    receiver_uids = [r["uid"] for p in points for r in p["receivers"]]
    assert len(receiver_uids) == len(set(receiver_uids))
    names = {p["name"] for p in points}
    mute_names = {m["name"] for m in files["mute-timings.yaml"]["muteTimes"]}
    [policy] = files["policies.yaml"]["policies"]
    routes = _walk(policy)
    for route in routes:
        assert route["receiver"] in names, route["receiver"]
        assert set(route.get("mute_time_intervals", [])) <= mute_names
    assert any(r.get("mute_time_intervals") for r in routes)
    assert any(r.get("continue") for r in routes)

    templates = "".join(t["template"] for t in files["templates.yaml"]["templates"])
    defined = set(re.findall(r'define "([^"]+)"', templates))
    used = set()
    for p in points:
        for r in p["receivers"]:
            used |= set(re.findall(r'template "([^"]+)"', yaml.safe_dump(r["settings"])))
    assert used and used <= defined


def test_grafana_rules_match_prometheus_rules() -> None:
    prom = {
        r["expr"]
        for p in (RULES / "prometheus").glob("*.rules.yml")
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
        if r["alert"] != "ErrorgateServiceInIncident"  # inhibition source: Grafana has no inhibition
    }
    grafana = {
        r["data"][0]["model"]["expr"] for g in _grafana_files()["rules.yaml"]["groups"] for r in g["rules"]
    }
    assert grafana == prom


def test_build_grafana_provisioning_api_shapes() -> None:
    api = build_grafana_provisioning()
    assert set(api) == {"rule_groups", "contact_points", "policies", "mute_timings", "templates"}
    group = api["rule_groups"][0]
    assert {"title", "folderUid", "interval", "rules"} <= set(group) and isinstance(group["interval"], int)
    assert all({"uid", "name", "type", "settings"} <= set(p) for p in api["contact_points"])
    assert {"pagerduty", "opsgenie", "slack", "webhook"} == {p["type"] for p in api["contact_points"]}
    matchers = [m for r in _walk(api["policies"]) for m in r.get("object_matchers", [])]
    assert ["team", "=", "payments"] in matchers and ["severity", "=", "P1"] in matchers
    og = next(p for p in api["contact_points"] if p["type"] == "opsgenie")
    assert og["settings"]["overridePriority"] is True and og["settings"]["responders"]
    assert all(
        r["annotations"]["og_priority"] in {"P1", "P2", "P3", "P4", "P5"}
        for g in api["rule_groups"]
        for r in g["rules"]
    )


def test_alerts_help() -> None:
    with pytest.raises(SystemExit) as e:
        cli_main(["alerts", "suppress", "--help"])
    assert e.value.code == 0
