"""``errorgate grafana push`` against a stub of Grafana's HTTP API (a real Grafana cannot be
installed here): exact calls, idempotency, dry-run diffs, secrets; and ``grafana export``."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.cli import main as cli
from errorgate.dashboards.generate import build_dashboards
from errorgate.dashboards.push import PushError, connect, push
from tests.support.grafana_stub import GrafanaStub

TOKEN = "glsa_stub_token_3f9a"
SECRET = "pd-routing-key-9b1c7e"


def provisioning(secret_file: Path) -> dict[str, Any]:
    """A small literal in build_grafana_provisioning()'s shapes."""
    query = {
        "refId": "A",
        "relativeTimeRange": {"from": 600, "to": 0},
        "datasourceUid": "prometheus",
        "model": {
            "refId": "A",
            "expr": 'sum by (service) (rate(errorgate_errors_total{service="checkout"}[5m]))',
        },
    }
    threshold = {
        "refId": "B",
        "relativeTimeRange": {"from": 0, "to": 0},
        "datasourceUid": "__expr__",
        "model": {
            "refId": "B",
            "type": "threshold",
            "expression": "A",
            "conditions": [{"evaluator": {"type": "gt", "params": [0.5]}}],
        },
    }
    return {
        "rule_groups": [
            {
                "title": "errorgate-error-rate",
                "folderUid": "somewhere-else",
                "interval": 60,
                "rules": [
                    {
                        "uid": "eg-checkout-rate",
                        "title": "ErrorgateErrorRateHigh checkout",
                        "condition": "B",
                        "data": [query, threshold],
                        "noDataState": "OK",
                        "execErrState": "Error",
                        "for": "5m",
                        "labels": {"severity": "P1", "team": "payments", "service": "checkout"},
                        "annotations": {"summary": "{{ $labels.service }}: error rate above threshold"},
                        "isPaused": False,
                    }
                ],
            }
        ],
        "contact_points": [
            {
                "uid": "payments-pagerduty",
                "name": "payments-pagerduty",
                "type": "pagerduty",
                "settings": {"integrationKey": f"$__file{{{secret_file}}}", "severity": "critical"},
                "disableResolveMessage": False,
            },
            {
                "uid": "payments-webhook",
                "name": "payments-webhook",
                "type": "webhook",
                "settings": {"url": "http://tickets.internal:8080/hook", "httpMethod": "POST"},
                "disableResolveMessage": False,
            },
        ],
        "policies": {
            "receiver": "payments-webhook",
            "group_by": ["team", "service", "severity"],
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": "payments-pagerduty",
                    "object_matchers": [["severity", "=", "P1"]],
                    "continue": True,
                    "mute_time_intervals": ["maintenance"],
                },
                {"receiver": "payments-webhook", "object_matchers": [["severity", "=", "P1"]]},
            ],
        },
        "mute_timings": [
            {
                "name": "maintenance",
                "time_intervals": [
                    {"weekdays": ["sunday"], "times": [{"start_time": "02:00", "end_time": "04:00"}]}
                ],
            }
        ],
        "templates": [
            {
                "name": "errorgate",
                "template": '{{ define "errorgate.summary" }}{{ .GroupLabels.service }}{{ end }}',
            }
        ],
    }


@pytest.fixture
def stub() -> Any:
    with GrafanaStub(token=TOKEN) as s:
        yield s
        assert s.violations == []
        assert s.unexpected == []


@pytest.fixture
def prov(tmp_path: Path) -> dict[str, Any]:
    secret = tmp_path / "pagerduty-payments.key"
    secret.write_text(SECRET + "\n")
    return provisioning(secret)


def dashboards() -> list[dict[str, Any]]:
    return list(build_dashboards().values())


def test_first_push_creates_everything_with_exact_calls(stub: GrafanaStub, prov: dict[str, Any]) -> None:
    out = io.StringIO()
    result = push(connect(stub.url, TOKEN), dashboards(), prov, out=out)

    # A fresh Grafana already has a default policy tree, so that one is an update.
    assert [c.action for c in result.changes] == ["create"] * 11 + ["update", "create"]
    assert result.summary() == "changed 13 of 13 objects (12 create, 1 update)"
    writes = [(c.method, c.path) for c in stub.writes()]
    assert writes == [
        ("POST", "/api/folders"),
        *[("POST", "/api/dashboards/db")] * 6,
        ("PUT", "/api/v1/provisioning/templates/errorgate"),
        ("POST", "/api/v1/provisioning/contact-points"),
        ("POST", "/api/v1/provisioning/contact-points"),
        ("POST", "/api/v1/provisioning/mute-timings"),
        ("PUT", "/api/v1/provisioning/policies"),
        ("PUT", "/api/v1/provisioning/folder/errorgate/rule-groups/errorgate-error-rate"),
    ]
    for call in stub.calls:
        assert call.headers["authorization"] == f"Bearer {TOKEN}"
        if call.method != "GET":
            assert call.headers["content-type"].split(";")[0] == "application/json"
        if call.method != "GET" and call.path.startswith("/api/v1/provisioning/"):
            assert call.headers["x-disable-provenance"] == "true"

    st = stub.state
    assert st.folders["errorgate"]["title"] == "errorgate"
    assert sorted(st.dashboards) == sorted(d["uid"] for d in dashboards())
    assert {d["meta"]["folderUid"] for d in st.dashboards.values()} == {"errorgate"}
    overview = st.dashboards["errorgate-errors"]["dashboard"]
    assert overview["title"] == "errorgate / Error overview" and len(overview["panels"]) == 15
    # Rules move into the target folder, whatever folder the generator named.
    group = st.rule_groups[("errorgate", "errorgate-error-rate")]
    assert group["folderUid"] == "errorgate"
    assert [(r["folderUID"], r["ruleGroup"]) for r in group["rules"]] == [
        ("errorgate", "errorgate-error-rate")
    ]
    # The $__file reference was expanded; the secret went to Grafana but nowhere else.
    assert st.contact_points["payments-pagerduty"]["settings"]["integrationKey"] == SECRET
    assert SECRET not in out.getvalue() and SECRET not in result.summary()
    assert st.policies is not None and st.policies["routes"][0]["receiver"] == "payments-pagerduty"
    assert list(st.mute_timings) == ["maintenance"]
    assert list(st.templates) == ["errorgate"]


def test_second_push_changes_nothing_and_says_so(
    stub: GrafanaStub, prov: dict[str, Any], capsys: Any
) -> None:
    push(connect(stub.url, TOKEN), dashboards(), prov)
    first_writes = len(stub.writes())

    result = push(connect(stub.url, TOKEN), dashboards(), prov)

    # The stub adds ids, versions, provenance and redacts the PagerDuty key, like Grafana.
    assert len(stub.writes()) == first_writes
    assert result.changed == []
    assert result.summary() == "no changes (13 objects up to date)"


def test_one_changed_object_is_the_only_write(stub: GrafanaStub, prov: dict[str, Any]) -> None:
    push(connect(stub.url, TOKEN), dashboards(), prov)
    before = len(stub.writes())
    changed = copy.deepcopy(prov)
    changed["rule_groups"][0]["rules"][0]["data"][1]["model"]["conditions"][0]["evaluator"]["params"] = [0.25]

    out = io.StringIO()
    dry = push(connect(stub.url, TOKEN), dashboards(), changed, dry_run=True, out=out)
    assert len(stub.writes()) == before
    assert [(c.kind, c.name, c.action) for c in dry.changed] == [
        ("rule group", "errorgate-error-rate", "update")
    ]
    diff = out.getvalue()
    assert diff.startswith(
        "--- grafana:rule group/errorgate-error-rate\n+++ errorgate:rule group/errorgate-error-rate\n"
    )
    assert re.search(r"^-\s+0\.5$", diff, re.M) and re.search(r"^\+\s+0\.25$", diff, re.M)
    assert dry.summary() == "would change 1 of 13 objects (1 update)"

    result = push(connect(stub.url, TOKEN), dashboards(), changed)
    new_writes = stub.writes()[before:]
    assert [(c.method, c.path) for c in new_writes] == [
        ("PUT", "/api/v1/provisioning/folder/errorgate/rule-groups/errorgate-error-rate")
    ]
    assert stub.state.rule_groups[("errorgate", "errorgate-error-rate")]["rules"][0]["data"][1]["model"][
        "conditions"
    ][0]["evaluator"]["params"] == [0.25]
    assert result.summary() == "changed 1 of 13 objects (1 update)"


def test_ui_edits_are_reverted_by_the_next_push(stub: GrafanaStub, prov: dict[str, Any]) -> None:
    push(connect(stub.url, TOKEN), dashboards(), prov)
    stub.state.contact_points["payments-webhook"]["settings"]["url"] = "http://edited-in-ui/"
    stub.state.dashboards["errorgate-retention"]["dashboard"]["title"] = "renamed in the UI"
    before = len(stub.writes())

    result = push(connect(stub.url, TOKEN), dashboards(), prov)

    assert sorted((c.kind, c.name) for c in result.changed) == [
        ("contact point", "payments-webhook"),
        ("dashboard", "errorgate-retention"),
    ]
    assert [(c.method, c.path) for c in stub.writes()[before:]] == [
        ("POST", "/api/dashboards/db"),
        ("PUT", "/api/v1/provisioning/contact-points/payments-webhook"),
    ]
    assert stub.state.dashboards["errorgate-retention"]["dashboard"]["title"] == "errorgate / Retention"
    assert (
        stub.state.contact_points["payments-webhook"]["settings"]["url"]
        == "http://tickets.internal:8080/hook"
    )


def test_dry_run_on_an_empty_grafana_writes_nothing_and_masks_secrets(
    stub: GrafanaStub, prov: dict[str, Any]
) -> None:
    out = io.StringIO()
    result = push(connect(stub.url, TOKEN), dashboards(), prov, dry_run=True, out=out)

    assert stub.writes() == []
    assert len(result.changed) == 13 and {c.action for c in result.changed} == {"create", "update"}
    text = out.getvalue()
    for label in (
        "folder/errorgate",
        "dashboard/errorgate-errors",
        "contact point/payments-pagerduty",
        "policies/tree",
    ):
        assert f"+++ errorgate:{label}\n" in text
    assert SECRET not in text
    assert '"integrationKey": "<secret>"' in text
    # Non-secret settings stay readable in the diff.
    assert '"severity": "critical"' in text


def test_wrong_token_fails_with_the_status_and_without_the_token(
    stub: GrafanaStub, prov: dict[str, Any]
) -> None:
    with pytest.raises(PushError) as e:
        push(connect(stub.url, "wrong-token-123"), dashboards(), prov)
    assert str(e.value) == "read folder errorgate: HTTP 401 invalid API key"
    assert "wrong-token-123" not in str(e.value)
    stub.violations.clear()  # the stub recorded the refused call; that was the point


def test_missing_secret_file_names_the_setting_not_the_value(stub: GrafanaStub, tmp_path: Path) -> None:
    prov = provisioning(tmp_path / "absent.key")
    with pytest.raises(
        PushError, match=r"contact point 'payments-pagerduty'\.settings\.integrationKey: cannot read"
    ):
        push(connect(stub.url, TOKEN), dashboards(), prov)
    assert [c.path for c in stub.writes() if "contact-points" in c.path] == []


def test_folder_option_sets_title_and_uid(stub: GrafanaStub, prov: dict[str, Any]) -> None:
    push(connect(stub.url, TOKEN), dashboards()[:1], prov, folder="Observability / errorgate")
    assert stub.state.folders["observability-errorgate"]["title"] == "Observability / errorgate"
    assert ("observability-errorgate", "errorgate-error-rate") in stub.state.rule_groups


def _secrets_for(provisioning_doc: dict[str, Any], directory: Path) -> None:
    for ref in re.findall(r"\$__file\{([^}]*)\}", json.dumps(provisioning_doc)):
        (directory / Path(ref).name).write_text("key-" + Path(ref).stem)


def test_cli_pushes_the_real_alerting_config_idempotently(
    stub: GrafanaStub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from errorgate.alert_rules.grafana import build_grafana_provisioning

    real = build_grafana_provisioning()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    _secrets_for(real, secrets)
    args = ["grafana", "push", "--url", stub.url, "--token", TOKEN, "--secrets-dir", str(secrets)]

    assert cli(args) == 0
    first = capsys.readouterr().out
    n = (
        1
        + len(build_dashboards())
        + len(real["templates"])
        + len(real["contact_points"])
        + len(real["mute_timings"])
        + 1
        + len(real["rule_groups"])
    )
    assert first.splitlines()[-1] == f"changed {n} of {n} objects ({n - 1} create, 1 update)"
    assert len(stub.state.contact_points) == len(real["contact_points"])
    assert sum(len(g["rules"]) for g in stub.state.rule_groups.values()) == sum(
        len(g["rules"]) for g in real["rule_groups"]
    )
    assert TOKEN not in first

    writes = len(stub.writes())
    assert cli(args) == 0
    assert capsys.readouterr().out == f"no changes ({n} objects up to date)\n"
    assert len(stub.writes()) == writes

    assert cli([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out == f"dry run: no changes ({n} objects up to date)\n"


def test_cli_failure_is_one_line_and_nonzero(
    stub: GrafanaStub, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert cli(["grafana", "push", "--url", stub.url, "--dashboards-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--token" in err
    assert cli(["grafana", "push", "--url", "grafana.example.com", "--token", TOKEN]) == 2
    assert "--url 'grafana.example.com'" in capsys.readouterr().err
    assert stub.calls == []


def test_export_writes_a_provisioning_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["grafana", "export", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    provider = yaml.safe_load((out / "provisioning/dashboards/errorgate.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/errorgate"
    dashboards_written = {
        p.name: json.loads(p.read_text()) for p in (out / "dashboards/errorgate").glob("*.json")
    }
    assert dashboards_written == build_dashboards()
    alerting = {p.name: yaml.safe_load(p.read_text()) for p in (out / "provisioning/alerting").glob("*.yaml")}
    assert set(alerting) == {
        "rules.yaml",
        "contact-points.yaml",
        "policies.yaml",
        "mute-timings.yaml",
        "templates.yaml",
    }
    assert all(doc["apiVersion"] == 1 for doc in alerting.values())
    assert alerting["rules.yaml"]["groups"] and alerting["contact-points.yaml"]["contactPoints"]
    # Rules land in the folder the dashboards provider creates.
    assert {g["folder"] for g in alerting["rules.yaml"]["groups"]} == {provider["providers"][0]["folder"]}
    assert len(capsys.readouterr().out.splitlines()) == 6 + 1 + 5
