"""``errorgate oncall sync``: the rotations and escalation chains of ``governance/oncall.yaml``
written into PagerDuty or Opsgenie for teams that keep one of them as their pager.

Like ``errorgate grafana push``: every object is read first, compared on the keys errorgate sets
(the vendors add ids, summaries and links of their own), and written only when it differs, so a
second sync writes nothing; ``--dry-run`` prints the same plan and writes nothing. Objects errorgate
creates are named ``errorgate-<rotation|team>`` and carry :data:`MARK` in their description; an
object with such a name but without the mark was made by hand and is never touched.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, time
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import httpx

from errorgate.governance.changes import Change, ChangeSet
from errorgate.governance.oncall import Layer, OnCall, OnCallError, Override

PREFIX = "errorgate-"
MARK = "managed by errorgate oncall sync"
DESCRIPTION = f"{MARK} from governance/oncall.yaml; edits here are overwritten by the next sync"


class SyncError(RuntimeError):
    """A sync failed; the message names the object, the key or the HTTP call, never the token."""


# Change kinds here: "schedule", "rotation", "override", "escalation policy", "escalation".
SyncResult = ChangeSet


class Http:
    """One vendor's REST API; failures name the call and the vendor's reason, never the token."""

    def __init__(self, vendor: str, base: str, headers: dict[str, str], timeout: float = 15.0) -> None:
        self.vendor = vendor
        self.client = httpx.Client(base_url=base.rstrip("/"), headers=headers, timeout=timeout)

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        try:
            resp = self.client.request(method, path, json=body, params=params)
        except httpx.HTTPError as e:
            raise SyncError(f"{self.vendor}: {method} {path}: cannot connect ({type(e).__name__})") from None
        if resp.status_code >= 400:
            raise SyncError(f"{self.vendor}: {method} {path}: HTTP {resp.status_code}: {_reason(resp)}")
        return resp.json() if resp.content else None

    def close(self) -> None:
        self.client.close()


def _reason(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.reason_phrase
    err = doc.get("error", doc) if isinstance(doc, dict) else doc
    if isinstance(err, dict):
        parts = [str(err.get("message", ""))] + [str(e) for e in err.get("errors", []) or []]
        return "; ".join(p for p in parts if p)[:300] or resp.reason_phrase
    return str(err)[:300]


# ------------------------------------------------------------------ comparison


def _instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def project(actual: Any, desired: Any) -> Any:
    """``actual`` reduced to the shape of ``desired``: keys errorgate does not set are ignored, and
    two spellings of one instant (``+01:00`` / ``Z``) count as equal."""
    if isinstance(desired, dict) and isinstance(actual, dict):
        return {k: project(actual[k], v) for k, v in desired.items() if k in actual}
    if isinstance(desired, list) and isinstance(actual, list) and len(desired) == len(actual):
        return [project(a, d) for a, d in zip(actual, desired, strict=True)]
    if isinstance(desired, str) and isinstance(actual, str) and actual != desired:
        a, d = _instant(actual), _instant(desired)
        if a is not None and a == d:
            return desired
    return actual


def unified_diff(kind: str, name: str, actual: Any, desired: Any) -> str:
    before = [] if actual is None else json.dumps(actual, indent=2, sort_keys=True).splitlines(keepends=True)
    after = json.dumps(desired, indent=2, sort_keys=True).splitlines(keepends=True)
    label = f"{kind}/{name}"
    return "".join(difflib.unified_diff(before, after, f"current {label}", f"oncall.yaml {label}"))


class Plan:
    """Records each object's outcome, prints it, and performs the write unless dry-running."""

    def __init__(self, out: TextIO, dry_run: bool) -> None:
        self.out = out
        self.result = SyncResult(dry_run=dry_run)

    def apply(self, kind: str, name: str, actual: Any, desired: Any, write: Callable[[], Any]) -> Any:
        """``write()``'s result when ``actual`` (None: missing) differs from ``desired``, else None."""
        shown = None if actual is None else project(actual, desired)
        action = "create" if actual is None else ("unchanged" if shown == desired else "update")
        diff = "" if action == "unchanged" else unified_diff(kind, name, shown, desired)
        self.record(Change(kind, name, action, diff))
        return write() if action != "unchanged" and not self.result.dry_run else None

    def record(self, change: Change) -> None:
        self.result.changes.append(change)
        print(f"{change.action:<9} {change.kind} {change.name}", file=self.out)
        if change.diff:
            print(change.diff.rstrip("\n"), file=self.out)


class VendorSync:
    """What a vendor's sync (PagerDuty, Opsgenie) works from: its API, oncall.yaml, the plan
    that records and performs the writes, and the time that splits history from the future."""

    def __init__(self, http: Http, oncall: OnCall, plan: Plan, now: datetime) -> None:
        self.http = http
        self.oncall = oncall
        self.plan = plan
        self.now = now

    def upcoming_overrides(self, rot: str) -> Iterator[tuple[int, Override, datetime, datetime]]:
        """``(index, override, start, end)`` of rotation ``rot``'s overrides that have not ended,
        naive times read in the rotation's zone. Past overrides are history, not something to write."""
        rotation = self.oncall.spec.rotations[rot]
        zone = ZoneInfo(rotation.time_zone)
        for i, o in enumerate(rotation.overrides):
            start, end = (t if t.tzinfo else t.replace(tzinfo=zone) for t in (o.start, o.end))
            if end > self.now:
                yield i, o, start, end


def owned(vendor: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` when errorgate made it; an error when a hand-made object has errorgate's name."""
    if MARK not in str(obj.get("description") or ""):
        raise SyncError(
            f"{vendor}: {kind} {obj.get('name')!r} exists but was not made by errorgate (its description "
            f"lacks {MARK!r}); rename it, or add the phrase to let errorgate manage it"
        )
    return obj


# ------------------------------------------------------------------ what oncall.yaml asks for


def teams_for(oncall: OnCall, target: str, team: str | None) -> list[str]:
    """``--team`` (any team), else every team whose ``channels`` include the target tool."""
    if team is not None:
        oncall.team(team)
        return [team]
    return [name for name, entry in sorted(oncall.spec.teams.items()) if target in entry.channels]


def rotations_of(oncall: OnCall, teams: Iterable[str]) -> list[str]:
    """The rotations the teams' chains page, each once, in order of first use."""
    found: list[str] = []
    for team in teams:
        entry = oncall.team(team)
        for level in entry.escalation.levels:
            for target in level.notify:
                rotation = rotation_for(oncall, team, target)
                if rotation and rotation not in found:
                    found.append(rotation)
        for rotation in (entry.primary, entry.secondary):
            if rotation and rotation not in found:
                found.append(rotation)
    return found


def rotation_for(oncall: OnCall, team: str, target: str) -> str | None:
    """A chain entry's rotation (None for ``user:NAME``)."""
    if target.startswith("user:"):
        return None
    entry = oncall.team(team)
    return {"primary": entry.primary, "secondary": entry.secondary}.get(target, target)


def layer_start(layer: Layer, zone: Any) -> datetime:
    """The first member's first handover, in the rotation's zone (ISO with its offset)."""
    return datetime.combine(layer.start, time.fromisoformat(layer.handoff), zone)


def layer_days(layer: Layer) -> float:
    from errorgate.config import parse_duration

    return {"daily": 1.0, "weekly": 7.0}.get(layer.length) or parse_duration(layer.length) / 86400


def hours_window(layer: Layer) -> tuple[time, int] | None:
    """A layer's ``hours`` as (start, seconds long); None when it covers the whole day."""
    if layer.hours is None:
        return None
    start_s, _, end_s = layer.hours.partition("-")
    start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    seconds = ((end.hour - start.hour) * 3600 + (end.minute - start.minute) * 60) % 86400
    return start, seconds or 86400


def email(oncall: OnCall, person: str, where: str) -> str:
    try:
        return oncall.email(person, where)
    except OnCallError as e:
        raise SyncError(str(e)) from None
