"""On-call rotations as code: handover instants (across DST), layers, overrides, the catalog
references, the CLI and iCalendar."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from errorgate.cli import main
from errorgate.governance.catalog import CatalogError, load_catalog
from errorgate.governance.oncall import OnCallError, OnCallFile, load_oncall, on_call

BERLIN_DAILY = {
    "time_zone": "Europe/Berlin",
    "layers": [{"members": ["ann", "ben"], "length": "daily", "handoff": "09:00", "start": "2025-03-28"}],
}


def rotation(spec: dict) -> object:
    return OnCallFile.model_validate({"rotations": {"r": spec}}).rotations["r"]


def test_handover_stays_at_local_handoff_time_across_the_spring_dst_change() -> None:
    rot = rotation(BERLIN_DAILY)
    # Sat 29 Mar 09:00 CET = 08:00Z; Sun 30 Mar clocks go 02:00 -> 03:00; Sun 09:00 CEST = 07:00Z.
    assert on_call(rot, datetime(2025, 3, 29, 8, 0, tzinfo=UTC)).who == "ben"
    shift = on_call(rot, datetime(2025, 3, 30, 6, 59, 59, tzinfo=UTC))
    assert shift.who == "ben" and shift.end == datetime(2025, 3, 30, 7, 0, tzinfo=UTC)
    assert (shift.end - shift.start).total_seconds() == 23 * 3600  # the short night
    assert on_call(rot, datetime(2025, 3, 30, 7, 0, tzinfo=UTC)).who == "ann"


def test_handover_across_the_autumn_dst_change() -> None:
    rot = rotation({**BERLIN_DAILY, "layers": [{**BERLIN_DAILY["layers"][0], "start": "2025-10-24"}]})
    # Sun 26 Oct clocks go 03:00 -> 02:00; 09:00 CET = 08:00Z.
    before = on_call(rot, datetime(2025, 10, 26, 7, 59, tzinfo=UTC))
    assert before.end == datetime(2025, 10, 26, 8, 0, tzinfo=UTC)
    assert (before.end - before.start).total_seconds() == 25 * 3600
    assert on_call(rot, datetime(2025, 10, 26, 8, 0, tzinfo=UTC)).who != before.who


def test_later_layers_win_in_their_window_and_overrides_win_over_all() -> None:
    rot = rotation(
        {
            "time_zone": "America/New_York",
            "layers": [
                {"members": ["night"], "length": "weekly", "start": "2025-01-06"},
                {"members": ["day"], "length": "weekly", "start": "2025-01-06", "hours": "09:00-17:00"},
            ],
            "overrides": [{"who": "cover", "start": "2025-06-18T12:00:00", "end": "2025-06-18T14:00:00",
                           "why": "day is at the dentist"}],
        }
    )  # fmt: skip
    assert on_call(rot, datetime(2025, 6, 17, 14, 0, tzinfo=UTC)).who == "day"  # 10:00 EDT
    night = on_call(rot, datetime(2025, 6, 17, 22, 0, tzinfo=UTC))
    assert night.who == "night" and night.end == datetime(2025, 6, 18, 13, 0, tzinfo=UTC)
    assert on_call(rot, datetime(2025, 6, 18, 17, 0, tzinfo=UTC)).who == "cover"  # 13:00 EDT


def test_unknown_time_zone_team_or_rotation_is_an_error_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "oncall.yaml"
    bad.write_text(
        "rotations:\n  r: {time_zone: Mars/Olympus, layers: [{members: [a], start: 2025-01-01}]}\n"
    )
    with pytest.raises(OnCallError, match=r"rotations\.r\.time_zone: unknown IANA time zone"):
        load_oncall(bad)
    bad.write_text(
        "rotations:\n  r: {layers: [{members: [a], start: 2025-01-01}]}\n"
        "teams:\n  ghosts: {primary: r, escalation: {levels: [{notify: [primary]}]}}\n"
    )
    with pytest.raises(OnCallError, match=r"teams\.ghosts: team is not in the service catalog"):
        load_oncall(bad, load_catalog())
    bad.write_text("teams:\n  payments: {primary: nobody, escalation: {levels: [{notify: [primary]}]}}\n")
    with pytest.raises(OnCallError, match=r"teams\.payments\.primary: rotation 'nobody'"):
        load_oncall(bad, load_catalog())


def test_the_catalog_refers_to_rotations_and_an_unknown_reference_names_the_key(tmp_path: Path) -> None:
    catalog = load_catalog()
    assert catalog.teams["payments"].escalation["default"].oncall == "payments"
    assert load_oncall(None, catalog).now("payments", datetime(2025, 6, 16, 12, tzinfo=UTC))["primary"]
    text = Path("governance/services.yaml").read_text().replace("oncall: platform", "oncall: platfrom")
    (tmp_path / "services.yaml").write_text(text)
    with pytest.raises(OnCallError, match=r"teams\.platform\.escalation\.default\.oncall: 'platfrom'"):
        load_oncall(None, load_catalog(tmp_path / "services.yaml"))
    old = Path("governance/services.yaml").read_text().replace("oncall: platform,", "primary: p1,")
    (tmp_path / "services.yaml").write_text(old)  # the old fixed-name form still loads
    assert load_catalog(tmp_path / "services.yaml").teams["platform"].escalation["default"].primary == "p1"
    (tmp_path / "services.yaml").write_text(old.replace("primary: p1,", ""))
    with pytest.raises(CatalogError, match="set oncall"):
        load_catalog(tmp_path / "services.yaml")


def test_cli_oncall_now_json_and_next(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["oncall", "now", "--team", "payments", "--format", "json", "--at", "2025-03-30T06:00:00Z"]) == 0
    )
    now = json.loads(capsys.readouterr().out)
    assert set(now) == {"team", "primary", "secondary", "until"} and now["team"] == "payments"
    assert now["until"] == "2025-03-31T07:00:00Z"  # Monday 09:00 CEST, after the DST change
    assert (
        main(["oncall", "next", "--team", "payments", "--format", "json", "--at", "2025-03-30T06:00:00Z"])
        == 0
    )
    nxt = json.loads(capsys.readouterr().out)
    assert nxt["primary"] != now["primary"]
    assert main(["oncall", "now", "--team", "nope"]) == 2
    assert "--team 'nope'" in capsys.readouterr().err


def test_cli_ical_exports_the_shifts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["oncall", "ical", "--team", "payments", "--days", "14", "--at", "2025-03-24T07:00:00Z"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.rstrip().endswith("END:VCALENDAR")
    assert "DTSTART:20250331T070000Z" in text  # the handover after the DST change, in UTC
    assert text.count("BEGIN:VEVENT") == 6  # 2 weeks + the partial third, for primary and secondary
