"""oncall.yaml -> Opsgenie (REST API v2): one schedule per rotation with a rotation per layer
(``/v2/schedules``, ``/v2/schedules/{id}/rotations``), overrides under an alias errorgate derives
from the window (``errorgate-<hash>``), and one escalation per team (``/v2/escalations``).

Users are Opsgenie usernames, which are their e-mail addresses (``people.<name>.email``).
Opsgenie's escalation delays count from the alert's creation, so each level's delay is the sum of
the ``wait`` of the levels before it."""

from __future__ import annotations

import hashlib
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from errorgate.governance.oncall import Layer, Rotation
from errorgate.governance.oncall_sync import (
    DESCRIPTION,
    PREFIX,
    Http,
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

API = "https://api.opsgenie.com"
TOKEN_ENV = "ERRORGATE_OPSGENIE_API_KEY"
BY_ID = {"identifierType": "id"}
SCHEDULE_BY_ID = {"scheduleIdentifierType": "id"}


def connect(url: str, token: str, timeout: float = 15.0) -> Http:
    return Http("Opsgenie", url, {"Authorization": f"GenieKey {token}"}, timeout)


def rotation_length(layer: Layer, where: str) -> tuple[str, int]:
    """Opsgenie's (type, length) for a layer's ``length``: whole weeks, days or hours only."""
    if layer.length == "weekly":
        return "weekly", 1
    days = layer_days(layer)
    if days.is_integer():
        return "daily", int(days)
    hours = days * 24
    if abs(hours - round(hours)) < 1e-9:
        return "hourly", round(hours)
    raise SyncError(
        f"{where}.length: Opsgenie rotations last whole hours, days or weeks, not {layer.length!r}"
    )


class OpsgenieSync(VendorSync):
    def run(self, teams: list[str]) -> None:
        existing = self.http.call("GET", "/v2/schedules", params={"expand": "rotation"}).get("data", [])
        by_name = {s.get("name"): s for s in existing}
        for rot in rotations_of(self.oncall, teams):
            schedule_id = self._schedule(rot, by_name.get(PREFIX + rot))
            self._overrides(rot, schedule_id)
        escalations = self.http.call("GET", "/v2/escalations").get("data", [])
        by_name = {e.get("name"): e for e in escalations}
        for team in teams:
            self._escalation(team, by_name.get(PREFIX + team))

    def _user(self, person: str, where: str) -> dict[str, str]:
        return {"type": "user", "username": email(self.oncall, person, where)}

    # ---------------------------------------------------------------- schedules and rotations

    def desired_rotations(self, name: str, rotation: Rotation) -> list[dict[str, Any]]:
        zone = ZoneInfo(rotation.time_zone)
        out = []
        for i, layer in enumerate(rotation.layers):
            where = f"rotations.{name}.layers[{i}]"
            start = layer_start(layer, zone)
            if start.minute not in (0, 30):
                # Opsgenie moves other minutes to :00 or :30; syncing would never converge.
                raise SyncError(f"{where}.handoff: Opsgenie hands over at :00 or :30, not {layer.handoff!r}")
            kind, length = rotation_length(layer, where)
            entry: dict[str, Any] = {
                "name": f"layer-{i + 1}", "startDate": start.isoformat(), "type": kind, "length": length,
                "participants": [self._user(m, f"{where}.members") for m in layer.members],
            }  # fmt: skip
            window = hours_window(layer)
            if window:
                end = (window[0].hour * 60 + window[0].minute + window[1] // 60) % 1440
                entry["timeRestriction"] = {"type": "time-of-day", "restriction": {
                    "startHour": window[0].hour, "startMin": window[0].minute,
                    "endHour": end // 60, "endMin": end % 60}}  # fmt: skip
            out.append(entry)
        return out

    def _schedule(self, rot: str, found: dict[str, Any] | None) -> str:
        rotation = self.oncall.spec.rotations[rot]
        rotations = self.desired_rotations(rot, rotation)
        desired: dict[str, Any] = {"name": PREFIX + rot, "description": DESCRIPTION, "timezone": rotation.time_zone,
                   "enabled": True}  # fmt: skip
        if found is None:
            body = {**desired, "rotations": rotations}
            made = self.plan.apply("schedule", desired["name"], None, body,
                                   partial(self.http.call, "POST", "/v2/schedules", body))  # fmt: skip
            return str(made["data"]["id"]) if made else f"<new {desired['name']}>"
        owned("Opsgenie", "schedule", found)
        sid = str(found["id"])
        self.plan.apply("schedule", desired["name"], found, desired,
                        partial(self.http.call, "PATCH", f"/v2/schedules/{sid}", desired, BY_ID))  # fmt: skip
        current = {r.get("name"): r for r in found.get("rotations") or []}
        for want in rotations:
            have = current.pop(want["name"], None)
            label = f"{desired['name']}/{want['name']}"
            path = f"/v2/schedules/{sid}/rotations"
            if have is None:
                self.plan.apply("rotation", label, None, want,
                                partial(self.http.call, "POST", path, want, SCHEDULE_BY_ID))  # fmt: skip
            else:
                rid = have["id"]
                self.plan.apply("rotation", label, have, want,
                                partial(self.http.call, "PATCH", f"{path}/{rid}", want, SCHEDULE_BY_ID))  # fmt: skip
        return sid

    def _overrides(self, rot: str, schedule_id: str) -> None:
        wanted: dict[str, dict[str, Any]] = {}
        for i, o, start, end in self.upcoming_overrides(rot):
            digest = hashlib.sha256(f"{rot}|{start.isoformat()}|{end.isoformat()}".encode()).hexdigest()
            wanted[PREFIX + digest[:16]] = {
                "user": self._user(o.who, f"rotations.{rot}.overrides[{i}].who"),
                "startDate": start.isoformat(), "endDate": end.isoformat(),
            }  # fmt: skip
        if not wanted:
            return
        path = f"/v2/schedules/{schedule_id}/overrides"
        existing: dict[str, Any] = {}
        if not schedule_id.startswith("<new"):
            found = self.http.call("GET", path, params=SCHEDULE_BY_ID).get("data", [])
            existing = {x.get("alias"): x for x in found}
        for alias, want in wanted.items():
            have = existing.get(alias)
            if have is None:
                self.plan.apply("override", alias, None, want,
                                partial(self.http.call, "POST", path, {"alias": alias, **want}, SCHEDULE_BY_ID))  # fmt: skip
            else:
                self.plan.apply("override", alias, have, want,
                                partial(self.http.call, "PUT", f"{path}/{alias}", want, SCHEDULE_BY_ID))  # fmt: skip

    # ---------------------------------------------------------------- escalations

    def _escalation(self, team: str, found: dict[str, Any] | None) -> None:
        entry = self.oncall.team(team)
        rules, delay = [], 0.0
        for i, level in enumerate(entry.escalation.levels):
            for j, target in enumerate(level.notify):
                rotation = rotation_for(self.oncall, team, target)
                where = f"teams.{team}.escalation.levels[{i}].notify[{j}]"
                recipient = (
                    {"type": "schedule", "name": PREFIX + rotation}
                    if rotation
                    else self._user(target[5:], where)
                )
                rules.append({"condition": "if-not-acked", "notifyType": "default",
                              "delay": {"timeAmount": round(delay / 60), "timeUnit": "minutes"},
                              "recipient": recipient})  # fmt: skip
            delay += level.wait
        desired: dict[str, Any] = {"name": PREFIX + team, "description": DESCRIPTION, "rules": rules}
        if entry.escalation.repeat:
            last = round(entry.escalation.levels[-1].wait / 60)
            desired["repeat"] = {"waitInterval": last, "count": entry.escalation.repeat}
        if found is None:
            self.plan.apply("escalation", desired["name"], None, desired,
                            partial(self.http.call, "POST", "/v2/escalations", desired))  # fmt: skip
            return
        owned("Opsgenie", "escalation", found)
        path = f"/v2/escalations/{found['id']}"
        self.plan.apply("escalation", desired["name"], found, desired,
                        partial(self.http.call, "PATCH", path, desired, BY_ID))  # fmt: skip
