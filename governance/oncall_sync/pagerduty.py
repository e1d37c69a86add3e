"""oncall.yaml -> PagerDuty (REST API v2): one schedule per rotation (``schedule_layers`` from its
layers, overrides through ``/schedules/{id}/overrides``) and one escalation policy per team.

Users are found by e-mail (``people.<name>.email``). PagerDuty turns are fixed lengths in seconds
from ``rotation_virtual_start``; layers are sent in oncall.yaml's order."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from errorgate.governance.oncall import OnCall, Rotation
from errorgate.governance.oncall_sync import (
    DESCRIPTION,
    PREFIX,
    Change,
    Http,
    Plan,
    SyncError,
    VendorSync,
    email,
    hours_window,
    layer_days,
    layer_start,
    owned,
    rotation_for,
    rotations_of,
)

API = "https://api.pagerduty.com"
TOKEN_ENV = "ERRORGATE_PAGERDUTY_API_TOKEN"


def connect(url: str, token: str, timeout: float = 15.0) -> Http:
    return Http(
        "PagerDuty",
        url,
        {"Authorization": f"Token token={token}", "Accept": "application/vnd.pagerduty+json;version=2"},
        timeout,
    )


class PagerDutySync(VendorSync):
    def __init__(self, http: Http, oncall: OnCall, plan: Plan, now: datetime) -> None:
        super().__init__(http, oncall, plan, now)
        self.users: dict[str, str] = {}

    def run(self, teams: list[str]) -> None:
        schedules = {rot: self._schedule(rot) for rot in rotations_of(self.oncall, teams)}
        for rot, schedule_id in schedules.items():
            self._overrides(rot, schedule_id)
        for team in teams:
            self._policy(team, schedules)

    # ---------------------------------------------------------------- lookups

    def user_id(self, person: str, where: str) -> str:
        address = email(self.oncall, person, where)
        if address not in self.users:
            found = self._list("/users", "users", {"query": address})
            match = [u for u in found if str(u.get("email", "")).lower() == address.lower()]
            if not match:
                raise SyncError(
                    f"PagerDuty: no user with the e-mail of people.{person}.email ({where}); "
                    "invite them first or correct the address"
                )
            self.users[address] = str(match[0]["id"])
        return self.users[address]

    def _list(self, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.http.call("GET", path, params={**params, "limit": 100, "offset": offset})
            items += page.get(key, [])
            if not page.get("more") or not page.get(key):
                return items
            offset += len(page[key])

    def _find(self, path: str, key: str, name: str, kind: str) -> dict[str, Any] | None:
        match = [o for o in self._list(path, key, {"query": name}) if o.get("name") == name]
        return owned("PagerDuty", kind, match[0]) if match else None

    # ---------------------------------------------------------------- schedules

    def desired_schedule(self, name: str, rotation: Rotation) -> dict[str, Any]:
        zone = ZoneInfo(rotation.time_zone)
        layers = []
        for i, layer in enumerate(rotation.layers):
            where = f"rotations.{name}.layers[{i}]"
            start = layer_start(layer, zone).isoformat()
            entry: dict[str, Any] = {
                "name": f"layer {i + 1}",
                "start": start,
                "rotation_virtual_start": start,
                "rotation_turn_length_seconds": round(layer_days(layer) * 86400),
                "users": [
                    {"user": {"id": self.user_id(m, f"{where}.members"), "type": "user_reference"}}
                    for m in layer.members
                ],
            }
            window = hours_window(layer)
            if window:
                entry["restrictions"] = [{"type": "daily_restriction", "duration_seconds": window[1],
                                          "start_time_of_day": window[0].strftime("%H:%M:%S")}]  # fmt: skip
            layers.append(entry)
        return {"type": "schedule", "name": PREFIX + name, "time_zone": rotation.time_zone,
                "description": DESCRIPTION, "schedule_layers": layers}  # fmt: skip

    def _schedule(self, rot: str) -> str:
        desired = self.desired_schedule(rot, self.oncall.spec.rotations[rot])
        found = self._find("/schedules", "schedules", desired["name"], "schedule")
        if found is None:
            made = self.plan.apply("schedule", desired["name"], None, desired,
                                   partial(self.http.call, "POST", "/schedules", {"schedule": desired}))  # fmt: skip
            return str(made["schedule"]["id"]) if made else f"<new {desired['name']}>"
        actual = self.http.call("GET", f"/schedules/{found['id']}")["schedule"]
        # PagerDuty may move a layer's ``start`` to when it was edited: it is sent, not compared.
        compared = copy.deepcopy(desired)
        for layer in compared["schedule_layers"]:
            layer.pop("start")
        body = copy.deepcopy(desired)
        # Existing layers keep their ids, so PagerDuty edits them instead of ending and adding layers.
        for layer, old in zip(body["schedule_layers"], actual.get("schedule_layers", []), strict=False):
            layer["id"] = old["id"]
        path = f"/schedules/{found['id']}"
        self.plan.apply("schedule", desired["name"], actual, compared,
                        partial(self.http.call, "PUT", path, {"schedule": body}))  # fmt: skip
        return str(found["id"])

    def _overrides(self, rot: str, schedule_id: str) -> None:
        time_zone = self.oncall.spec.rotations[rot].time_zone
        wanted: list[dict[str, Any]] = []
        for i, o, start, end in self.upcoming_overrides(rot):
            user = self.user_id(o.who, f"rotations.{rot}.overrides[{i}].who")
            wanted.append({"start": start.isoformat(), "end": end.isoformat(),
                           "user": {"id": user, "type": "user_reference"}, "time_zone": time_zone})  # fmt: skip
        if not wanted:
            return
        existing = set()
        if not schedule_id.startswith("<new"):
            until = max(datetime.fromisoformat(w["end"]) for w in wanted) + timedelta(days=1)
            found = self.http.call("GET", f"/schedules/{schedule_id}/overrides",
                                   params={"since": self.now.isoformat(), "until": until.isoformat()})  # fmt: skip
            existing = {_key(o) for o in found.get("overrides", [])}
        missing = [w for w in wanted if _key(w) not in existing]
        for w in wanted:
            name = f"{PREFIX}{rot} {w['start']}..{w['end']}"
            self.plan.record(Change("override", name, "create" if w in missing else "unchanged"))
        if missing and not self.plan.result.dry_run:
            self.http.call("POST", f"/schedules/{schedule_id}/overrides", {"overrides": missing})

    # ---------------------------------------------------------------- escalation policies

    def _policy(self, team: str, schedules: dict[str, str]) -> None:
        entry = self.oncall.team(team)
        rules = []
        for i, level in enumerate(entry.escalation.levels):
            targets = []
            for j, target in enumerate(level.notify):
                rotation = rotation_for(self.oncall, team, target)
                if rotation:
                    targets.append({"id": schedules[rotation], "type": "schedule_reference"})
                else:
                    where = f"teams.{team}.escalation.levels[{i}].notify[{j}]"
                    targets.append({"id": self.user_id(target[5:], where), "type": "user_reference"})
            rules.append({"escalation_delay_in_minutes": max(1, round(level.wait / 60)), "targets": targets})
        desired: dict[str, Any] = {"type": "escalation_policy", "name": PREFIX + team, "description": DESCRIPTION,
                   "num_loops": entry.escalation.repeat, "escalation_rules": rules}  # fmt: skip
        found = self._find(
            "/escalation_policies", "escalation_policies", desired["name"], "escalation policy"
        )
        if found is None:
            self.plan.apply("escalation policy", desired["name"], None, desired,
                            partial(self.http.call, "POST", "/escalation_policies", {"escalation_policy": desired}))  # fmt: skip
            return
        path = f"/escalation_policies/{found['id']}"
        self.plan.apply("escalation policy", desired["name"], found, desired,
                        partial(self.http.call, "PUT", path, {"escalation_policy": desired}))  # fmt: skip


def _key(override: dict[str, Any]) -> tuple[datetime, datetime, str]:
    start, end = (datetime.fromisoformat(override[k]).astimezone(UTC) for k in ("start", "end"))
    return start, end, str(override["user"]["id"])
