"""On-call rotations as code (``governance/oncall.yaml``): who is on call for a team at an
instant, until when, and the team's escalation chain.

Shifts hand over at a wall-clock time in the rotation's IANA time zone, so a 09:00 Berlin
handoff stays at 09:00 Berlin across daylight-saving changes (the shift that spans the change
is an hour shorter or longer). Later layers win where they are active; overrides win over all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from errorgate.config import Duration, parse_duration
from errorgate.governance.catalog import ServiceCatalog
from errorgate.governance.yamlfile import load_model


class OnCallError(ValueError):
    """A problem in oncall.yaml or its references; the message names the key."""


def _hhmm(value: str) -> time:
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected a time like 09:00, got {value!r}") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Layer(_Strict):
    members: list[str] = Field(min_length=1)
    length: str = "weekly"  # daily, weekly, or a duration (3d, 12h)
    handoff: str = "09:00"  # local time of the rotation's time zone
    start: date  # the first member's first shift starts this day at the handoff time
    hours: str | None = None  # "HH:MM-HH:MM": this layer only covers that daily window

    @field_validator("handoff")
    @classmethod
    def _handoff(cls, value: str) -> str:
        _hhmm(value)
        return value

    @field_validator("length")
    @classmethod
    def _length(cls, value: str) -> str:
        if value not in ("daily", "weekly") and parse_duration(value) <= 0:
            raise ValueError("must be daily, weekly or a positive duration")
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None:
            start, sep, end = value.partition("-")
            if not sep:
                raise ValueError(f"expected HH:MM-HH:MM, got {value!r}")
            _hhmm(start), _hhmm(end)
        return value


class Override(_Strict):
    who: str = Field(min_length=1)
    start: datetime  # without an offset: the rotation's local time
    end: datetime
    why: str = Field(min_length=1)


class Rotation(_Strict):
    time_zone: str = "UTC"
    layers: list[Layer] = Field(min_length=1)
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class Level(_Strict):
    notify: list[str] = Field(min_length=1)  # primary, secondary, a rotation name, or user:NAME
    wait: Duration = 600.0  # before the next level is paged, if nobody acknowledged


class EscalationChain(_Strict):
    levels: list[Level] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=10)  # times the whole chain starts over


class TeamOnCall(_Strict):
    primary: str
    secondary: str | None = None
    escalation: EscalationChain
    channels: list[Literal["pagerduty", "opsgenie", "slack", "email"]] = Field(default=["pagerduty"])


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class Person(_Strict):
    """How a rotation member is known to the paging tools: ``errorgate oncall sync`` finds the
    PagerDuty user and the Opsgenie user (its username) by this e-mail address."""

    email: str

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.fullmatch(value):
            raise ValueError("expected an e-mail address like alice@example.com")
        return value


class OnCallFile(_Strict):
    rotations: dict[str, Rotation] = Field(default_factory=dict)
    teams: dict[str, TeamOnCall] = Field(default_factory=dict)
    # Optional: only ``errorgate oncall sync`` needs them (members and user:NAME targets).
    people: dict[str, Person] = Field(default_factory=dict)


@dataclass
class Shift:
    who: str
    start: datetime
    end: datetime


def _days(length: str) -> float:
    return {"daily": 1.0, "weekly": 7.0}.get(length) or parse_duration(length) / 86400


def _boundary(layer: Layer, zone: ZoneInfo, k: int) -> datetime:
    """Start of shift ``k``: whole-day lengths step in local calendar days (DST-safe)."""
    days = _days(layer.length)
    first = datetime.combine(layer.start, _hhmm(layer.handoff), zone)
    if days.is_integer():
        local = datetime.combine(layer.start + timedelta(days=int(days) * k), _hhmm(layer.handoff), zone)
        return local.astimezone(UTC)
    return first.astimezone(UTC) + timedelta(days=days * k)


def _layer_shift(layer: Layer, zone: ZoneInfo, at: datetime) -> Shift:
    days = _days(layer.length)
    elapsed = (at - datetime.combine(layer.start, _hhmm(layer.handoff), zone)).total_seconds() / 86400
    k = int(elapsed // days)
    while _boundary(layer, zone, k) > at:
        k -= 1
    while _boundary(layer, zone, k + 1) <= at:
        k += 1
    return Shift(
        layer.members[k % len(layer.members)], _boundary(layer, zone, k), _boundary(layer, zone, k + 1)
    )


def _window(layer: Layer, zone: ZoneInfo, at: datetime) -> tuple[bool, datetime]:
    """Whether ``at`` is inside the layer's daily window, and when that next changes."""
    if layer.hours is None:
        return True, datetime.max.replace(tzinfo=UTC)
    start_s, _, end_s = layer.hours.partition("-")
    local = at.astimezone(zone)
    edges = sorted(
        datetime.combine(local.date() + timedelta(days=d), _hhmm(t), zone).astimezone(UTC)
        for d in (-1, 0, 1)
        for t in (start_s, end_s)
    )
    start_t, end_t = _hhmm(start_s), _hhmm(end_s)
    now_t = local.time()
    inside = start_t <= now_t < end_t if start_t < end_t else (now_t >= start_t or now_t < end_t)
    return inside, next(e for e in edges if e > at)


def on_call(rotation: Rotation, at: datetime) -> Shift:
    """Who the rotation pages at ``at`` (aware), and until when that holds."""
    zone = ZoneInfo(rotation.time_zone)
    chosen: Shift | None = None
    change = datetime.max.replace(tzinfo=UTC)
    for layer in rotation.layers:
        active, edge = _window(layer, zone, at)
        change = min(change, edge)
        if active:
            chosen = _layer_shift(layer, zone, at)
            change = min(change, chosen.end)
    if chosen is None:  # no layer covers this instant: the first layer's member stays responsible
        chosen = _layer_shift(rotation.layers[0], zone, at)
        change = min(change, chosen.end)
    for o in rotation.overrides:
        start, end = (_aware(t, zone) for t in (o.start, o.end))
        if start <= at < end:
            return Shift(o.who, start, end)
        if at < start:
            change = min(change, start)
    return Shift(chosen.who, chosen.start, change)


def _aware(value: datetime, zone: ZoneInfo) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=zone)


class OnCall:
    """The loaded, cross-checked file; also the incident engine's directory of who to page."""

    def __init__(self, spec: OnCallFile, source: str) -> None:
        self.spec = spec
        self.source = source

    def now(self, team: str, at: datetime) -> dict[str, str | None]:
        entry = self.team(team)
        primary = on_call(self.spec.rotations[entry.primary], at)
        until = primary.end
        secondary = None
        if entry.secondary:
            shift = on_call(self.spec.rotations[entry.secondary], at)
            secondary, until = shift.who, min(until, shift.end)
        return {"team": team, "primary": primary.who, "secondary": secondary, "until": _iso(until)}

    def team(self, team: str) -> TeamOnCall:
        if team not in self.spec.teams:
            known = ", ".join(sorted(self.spec.teams)) or "none"
            raise OnCallError(f"--team {team!r}: not defined under teams: in {self.source} (known: {known})")
        return self.spec.teams[team]

    def shifts(self, rotation: str, start: datetime, end: datetime) -> list[Shift]:
        out: list[Shift] = []
        at = start
        while at < end and len(out) < 10_000:
            shift = on_call(self.spec.rotations[rotation], at)
            if out and out[-1].who == shift.who and out[-1].end == at:
                out[-1].end = min(shift.end, end)
            else:
                out.append(Shift(shift.who, at, min(shift.end, end)))
            at = shift.end
        return out

    def resolve_target(self, team: str, target: str, at: float) -> str | None:
        """A chain entry (primary, secondary, rotation, user:NAME) -> the person paged at ``at``."""
        entry = self.team(team)
        when = datetime.fromtimestamp(at, UTC)
        if target.startswith("user:"):
            return target[5:]
        rotation = {"primary": entry.primary, "secondary": entry.secondary}.get(target, target)
        return on_call(self.spec.rotations[rotation], when).who if rotation else None

    def email(self, person: str, where: str) -> str:
        """``person``'s e-mail from ``people:``; an error naming the key when it is missing."""
        entry = self.spec.people.get(person)
        if entry is None:
            raise OnCallError(
                f"{self.source}: people.{person}.email: {person!r} ({where}) has no e-mail; "
                "the paging tools find users by it"
            )
        return entry.email

    def chain(self, team: str) -> tuple[list[tuple[float, list[str]]], int, list[str]] | None:
        entry = self.spec.teams.get(team)
        if entry is None:
            return None
        levels = [(level.wait, list(level.notify)) for level in entry.escalation.levels]
        return levels, entry.escalation.repeat, list(entry.channels)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check(spec: OnCallFile, source: str, catalog: ServiceCatalog | None) -> None:
    known_teams = (set(catalog.teams) | set(catalog.owners)) if catalog else None
    for name, entry in spec.teams.items():
        if known_teams is not None and name not in known_teams:
            raise OnCallError(f"{source}: teams.{name}: team is not in the service catalog")
        for key, ref in (("primary", entry.primary), ("secondary", entry.secondary)):
            if ref is not None and ref not in spec.rotations:
                raise OnCallError(
                    f"{source}: teams.{name}.{key}: rotation {ref!r} is not defined under rotations:"
                )
        for i, level in enumerate(entry.escalation.levels):
            for j, target in enumerate(level.notify):
                plain = target in ("primary", "secondary") or target in spec.rotations
                if not (plain or target.startswith("user:")) or (
                    target == "secondary" and not entry.secondary
                ):
                    raise OnCallError(
                        f"{source}: teams.{name}.escalation.levels[{i}].notify[{j}]: {target!r} is not "
                        "primary, secondary (when set), a rotation or user:NAME"
                    )
    if catalog is not None:
        for team, team_entry in catalog.teams.items():
            for policy, esc in team_entry.escalation.items():
                if esc.oncall is not None and esc.oncall not in spec.teams:
                    raise OnCallError(
                        f"services.yaml: teams.{team}.escalation.{policy}.oncall: {esc.oncall!r} "
                        f"is not a team in {source}"
                    )


def load_oncall(path: str | Path | None = None, catalog: ServiceCatalog | None = None) -> OnCall:
    """Load ``path`` or the bundled ``governance/oncall.yaml`` and check it against the catalog."""
    spec, source, _ = load_model(path, "oncall.yaml", OnCallFile, OnCallError, "on-call file")
    _check(spec, source, catalog)
    return OnCall(spec, source)


def ical(oncall: OnCall, team: str, start: datetime, days: int = 28) -> str:
    """The team's primary (and secondary) shifts as an iCalendar (RFC 5545) feed."""
    entry = oncall.team(team)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//errorgate//oncall//EN", "CALSCALE:GREGORIAN"]
    stamp = start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    for role, rotation in (("primary", entry.primary), ("secondary", entry.secondary)):
        if rotation is None:
            continue
        for shift in oncall.shifts(rotation, start, start + timedelta(days=days)):
            begin = shift.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            lines += [
                "BEGIN:VEVENT",
                f"UID:{team}-{role}-{begin}@errorgate",
                f"DTSTAMP:{stamp}",
                f"DTSTART:{begin}",
                f"DTEND:{shift.end.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}",
                f"SUMMARY:{team} {role} on call: {shift.who}",
                "END:VEVENT",
            ]
    lines.append("END:VCALENDAR")
    return "\r\n".join(lines) + "\r\n"
