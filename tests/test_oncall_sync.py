"""``errorgate oncall sync``: oncall.yaml's rotations and chains written into PagerDuty and
Opsgenie, diff first, only differences written. Both vendors are loopback stubs that keep state
and validate every body against the vendor's published OpenAPI/Swagger schema
(tests/support/oncall_vendors.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from errorgate.cli import main
from tests.support.oncall_vendors import OpsgenieStub, PagerDutyStub

BUNDLED = Path(__file__).resolve().parent.parent / "governance" / "oncall.yaml"
PEOPLE = ["alice", "bob", "carol", "dan", "erin", "frank", "payments-lead"]
AT = "2025-06-16T10:00:00Z"
PD_TOKEN, OG_KEY = "pd-rest-t0ken-n3ver-log", "og-config-k3y-n3ver-log"


def oncall_file(tmp_path: Path, change: Any = None) -> Path:
    doc = yaml.safe_load(BUNDLED.read_text())
    doc["rotations"]["payments-primary"]["overrides"] = [
        {"who": "carol", "start": "2025-06-20T09:00:00", "end": "2025-06-21T09:00:00", "why": "bob travels"},
        {"who": "alice", "start": "2025-01-01T09:00:00", "end": "2025-01-02T09:00:00", "why": "in the past"},
    ]
    if change:
        change(doc)
    path = tmp_path / "oncall.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def sync(path: Path, target: str, url: str, *extra: str) -> int:
    return main(["oncall", "sync", "--target", target, "--url", url, "--file", str(path), "--at", AT, *extra])


@pytest.fixture
def pd(monkeypatch: pytest.MonkeyPatch) -> Iterator[PagerDutyStub]:
    monkeypatch.setenv("ERRORGATE_PAGERDUTY_API_TOKEN", PD_TOKEN)
    users = {f"{p}@example.com": f"PU{p.upper().replace('-', '')}" for p in PEOPLE}
    with PagerDutyStub(users, token=PD_TOKEN) as stub:
        yield stub  # type: ignore[misc]
    assert stub.unexpected == []


@pytest.fixture
def og(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsgenieStub]:
    monkeypatch.setenv("ERRORGATE_OPSGENIE_API_KEY", OG_KEY)
    with OpsgenieStub([f"{p}@example.com" for p in PEOPLE], key=OG_KEY) as stub:
        yield stub  # type: ignore[misc]
    assert stub.unexpected == []


def routes(stub: PagerDutyStub | OpsgenieStub) -> list[str]:
    return [c.route for c in stub.writes()]


def test_pagerduty_sync_creates_schedules_and_policies_then_is_idempotent(
    tmp_path: Path, pd: PagerDutyStub, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oncall_file(tmp_path)
    assert sync(path, "pagerduty", pd.url) == 0
    out = capsys.readouterr().out
    # payments and storefront list pagerduty under channels; platform (slack only) is left alone.
    names = sorted(s["name"] for s in pd.schedules.values())
    assert names == ["errorgate-payments-primary", "errorgate-payments-secondary",
                     "errorgate-storefront-primary", "errorgate-storefront-secondary"]  # fmt: skip
    assert sorted(p["name"] for p in pd.policies.values()) == ["errorgate-payments", "errorgate-storefront"]
    assert pd.violations == []
    primary = next(s for s in pd.schedules.values() if s["name"] == "errorgate-payments-primary")
    [layer] = primary["schedule_layers"]
    assert [u["user"]["id"] for u in layer["users"]] == ["PUALICE", "PUBOB", "PUCAROL"]
    assert layer["rotation_turn_length_seconds"] == 7 * 86400
    assert layer["rotation_virtual_start"] == "2025-01-06T09:00:00+01:00"  # 09:00 Berlin
    assert primary["time_zone"] == "Europe/Berlin" and "managed by errorgate" in primary["description"]
    day = next(s for s in pd.schedules.values() if s["name"] == "errorgate-storefront-primary")
    assert day["schedule_layers"][1]["restrictions"] == [
        {"type": "daily_restriction", "duration_seconds": 8 * 3600, "start_time_of_day": "09:00:00"}]  # fmt: skip
    policy = next(p for p in pd.policies.values() if p["name"] == "errorgate-payments")
    assert policy["num_loops"] == 1
    assert [(r["escalation_delay_in_minutes"], [t["type"] for t in r["targets"]]) for r in policy["escalation_rules"]] == [
        (10, ["schedule_reference"]), (10, ["schedule_reference"]), (15, ["user_reference"])]  # fmt: skip
    assert policy["escalation_rules"][0]["targets"][0]["id"] == primary["id"]
    # Only the future override is written, once.
    [override] = pd.overrides[primary["id"]]
    assert override["user"]["id"] == "PUCAROL" and override["start"] == "2025-06-20T09:00:00+02:00"
    assert "create    schedule errorgate-payments-primary" in out and out.strip().endswith("(7 create)")
    assert PD_TOKEN not in out

    before = len(pd.writes())
    assert sync(path, "pagerduty", pd.url) == 0
    out = capsys.readouterr().out
    assert len(pd.writes()) == before  # the second sync writes nothing
    assert (
        "no changes (7 objects up to date)" in out and "unchanged schedule errorgate-payments-primary" in out
    )


def test_one_member_change_is_exactly_one_put(
    tmp_path: Path, pd: PagerDutyStub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sync(oncall_file(tmp_path), "pagerduty", pd.url) == 0
    before = len(pd.writes())

    def swap(doc: dict[str, Any]) -> None:
        doc["rotations"]["payments-primary"]["layers"][0]["members"] = ["alice", "bob", "dan"]

    capsys.readouterr()
    assert sync(oncall_file(tmp_path, swap), "pagerduty", pd.url) == 0
    out = capsys.readouterr().out
    [put] = pd.writes()[before:]
    assert put.route == "PUT /schedules/{id}"
    layer = put.body["schedule"]["schedule_layers"][0]
    assert [u["user"]["id"] for u in layer["users"]] == ["PUALICE", "PUBOB", "PUDAN"]
    assert layer["id"].startswith("PL")  # the layer is edited in place, not ended and re-added
    assert "update    schedule errorgate-payments-primary" in out
    assert '-            "id": "PUCAROL"' in out and '+            "id": "PUDAN"' in out
    assert pd.violations == []


def test_dry_run_writes_nothing_and_prints_the_diff(
    tmp_path: Path, pd: PagerDutyStub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ERRORGATE_PAGERDUTY_API_TOKEN")
    token_file = tmp_path / "pd.token"
    token_file.write_text(PD_TOKEN + "\n")
    args = ("--dry-run", "--team", "payments", "--token-file", str(token_file))
    assert sync(oncall_file(tmp_path), "pagerduty", pd.url, *args) == 0
    out = capsys.readouterr().out
    assert pd.writes() == [] and pd.schedules == {}
    assert "create    schedule errorgate-payments-primary" in out
    assert "create    escalation policy errorgate-payments" in out
    assert '+  "name": "errorgate-payments-primary",' in out
    assert '"id": "<new errorgate-payments-primary>"' in out  # the policy points at the schedule to be
    assert out.strip().endswith("dry run: would change 4 of 4 objects (4 create)")
    assert "storefront" not in out


def test_a_hand_made_object_with_errorgates_name_is_never_touched(
    tmp_path: Path, pd: PagerDutyStub, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.schedules["PHAND01"] = {"id": "PHAND01", "type": "schedule", "name": "errorgate-payments-primary",
                               "summary": "x", "description": "ours, by hand", "time_zone": "UTC",
                               "self": "", "schedule_layers": []}  # fmt: skip
    assert sync(oncall_file(tmp_path), "pagerduty", pd.url, "--team", "payments") == 2
    err = capsys.readouterr().err
    assert "schedule 'errorgate-payments-primary' exists but was not made by errorgate" in err
    assert pd.writes() == []


def test_a_member_without_an_email_is_an_error_naming_the_key(
    tmp_path: Path, pd: PagerDutyStub, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oncall_file(tmp_path, lambda doc: doc["people"].pop("bob"))
    assert sync(path, "pagerduty", pd.url, "--team", "payments") == 2
    err = capsys.readouterr().err
    assert "people.bob.email" in err and "rotations.payments-primary.layers[0].members" in err
    assert pd.writes() == []
    bad = oncall_file(tmp_path, lambda doc: doc["people"].update(bob={"email": "bob-at-example"}))
    assert sync(bad, "pagerduty", pd.url) == 2
    assert "people.bob.email: expected an e-mail address" in capsys.readouterr().err


def test_a_missing_token_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.delenv("ERRORGATE_PAGERDUTY_API_TOKEN", raising=False)
    assert sync(oncall_file(tmp_path), "pagerduty", "http://127.0.0.1:9") == 2
    assert "ERRORGATE_PAGERDUTY_API_TOKEN" in capsys.readouterr().err


def test_the_stubs_reject_malformed_bodies(pd: PagerDutyStub, og: OpsgenieStub) -> None:
    """Validation is live: bodies that break the vendors' schemas are refused and not stored."""
    headers = {
        "Authorization": f"Token token={PD_TOKEN}",
        "Accept": "application/vnd.pagerduty+json;version=2",
    }
    layer = {"start": "2025-01-06T09:00:00Z", "rotation_virtual_start": "2025-01-06T09:00:00Z",
             "rotation_turn_length_seconds": "one week", "users": []}  # fmt: skip
    body = {"schedule": {"type": "schedule", "name": "x", "time_zone": "UTC", "schedule_layers": [layer]}}
    resp = httpx.post(f"{pd.url}/schedules", json=body, headers=headers)
    assert resp.status_code == 400 and "rotation_turn_length_seconds" in resp.text
    assert pd.schedules == {} and pd.violations
    missing = {"escalation_policy": {"type": "escalation_policy", "name": "x"}}
    assert httpx.post(f"{pd.url}/escalation_policies", json=missing, headers=headers).status_code == 400
    assert "'escalation_rules' is a required property" in pd.violations[-1]

    og_headers = {"Authorization": f"GenieKey {OG_KEY}"}
    rotation = {
        "startDate": "2025-01-06T09:00:00Z",
        "type": "fortnightly",
        "participants": [{"type": "user"}],
    }
    resp = httpx.post(
        f"{og.url}/v2/schedules", json={"name": "x", "rotations": [rotation]}, headers=og_headers
    )
    assert resp.status_code == 400 and "fortnightly" in resp.text and og.schedules == {}
    rule = {"condition": "if-not-acked", "notifyType": "default", "recipient": {"type": "user"}}
    resp = httpx.post(f"{og.url}/v2/escalations", json={"name": "x", "rules": [rule]}, headers=og_headers)
    assert resp.status_code == 400 and "'delay' is a required property" in resp.text
    assert httpx.get(f"{og.url}/v2/schedules", headers={"Authorization": "GenieKey wrong"}).status_code == 401


def test_opsgenie_sync_creates_then_is_idempotent_and_a_change_is_one_patch(
    tmp_path: Path, og: OpsgenieStub, capsys: pytest.CaptureFixture[str]
) -> None:
    path = oncall_file(tmp_path)
    assert sync(path, "opsgenie", og.url) == 0
    out = capsys.readouterr().out
    assert og.violations == []
    # Only payments lists opsgenie under channels.
    assert sorted(s["name"] for s in og.schedules.values()) == ["errorgate-payments-primary",
                                                                 "errorgate-payments-secondary"]  # fmt: skip
    primary = next(s for s in og.schedules.values() if s["name"] == "errorgate-payments-primary")
    [rot] = primary["rotations"]
    assert (rot["type"], rot["length"], rot["startDate"]) == ("weekly", 1, "2025-01-06T09:00:00+01:00")
    assert [p["username"] for p in rot["participants"]] == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
    [esc] = og.escalations.values()
    # Opsgenie delays count from the alert: 0, 10, 20 minutes.
    assert [(r["delay"]["timeAmount"], r["recipient"]["type"]) for r in esc["rules"]] == [
        (0, "schedule"), (10, "schedule"), (20, "user")]  # fmt: skip
    assert esc["repeat"] == {"waitInterval": 15, "count": 1}
    [override] = og.overrides[primary["id"]].values()
    assert override["user"]["username"] == "carol@example.com" and override["alias"].startswith("errorgate-")
    assert out.strip().endswith("changed 4 of 4 objects (4 create)")
    assert OG_KEY not in out

    before = len(og.writes())
    assert sync(path, "opsgenie", og.url) == 0
    assert len(og.writes()) == before and "no changes" in capsys.readouterr().out

    def swap(doc: dict[str, Any]) -> None:
        doc["rotations"]["payments-secondary"]["layers"][0]["members"] = ["bob", "alice"]

    assert sync(oncall_file(tmp_path, swap), "opsgenie", og.url) == 0
    [patch] = og.writes()[before:]
    assert patch.route == "PATCH /v2/schedules/{identifier}/rotations/{id}"
    assert [p["username"] for p in patch.body["participants"]] == ["bob@example.com", "alice@example.com"]
    assert og.violations == []
