"""The quarterly access review over the governance audit log.

Summarises decrypt attempts by user, role and field, lists every denied, failed or tampered
attempt, the access-policy versions (sha256) in force and every policy change, rules change
and key operation in the window, and
flags what a reviewer should ask about: days on which a user decrypted more than
``volume_factor`` times their own median per active day (or more than ``max_per_day``),
and attempts outside working hours in the reviewer's timezone.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime, tzinfo
from typing import Any


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _split(
    entries: list[dict[str, Any]], since: datetime, now: datetime, tz: tzinfo | None
) -> tuple[list[tuple[datetime, dict[str, Any]]], list[dict[str, Any]], Counter[str]]:
    """(decrypt attempts in the window, governance events in the window, policy sha256 counts)."""
    window: list[tuple[datetime, dict[str, Any]]] = []
    changes: list[dict[str, Any]] = []
    policies: Counter[str] = Counter()
    for entry in entries:
        try:
            moment = _parse_time(str(entry["time"]))
        except (KeyError, ValueError):
            continue
        if not since <= moment <= now:
            continue
        event = str(entry.get("event", "decrypt"))
        if event == "decrypt":
            window.append((moment.astimezone(tz), entry))
            policies[str(entry.get("policy_sha256", ""))] += 1
        else:
            changes.append(_change(event, moment.astimezone(tz), entry))

    return window, changes, policies


def build_report(
    entries: list[dict[str, Any]],
    *,
    since: datetime,
    now: datetime,
    tz: tzinfo | None = None,
    work_hours: tuple[int, int] = (7, 20),
    volume_factor: float = 3.0,
    max_per_day: int = 20,
) -> dict[str, Any]:
    window, changes, policies = _split(entries, since, now, tz)
    outcomes: Counter[str] = Counter()
    by_user: dict[str, Counter[str]] = defaultdict(Counter)
    by_role: dict[str, Counter[str]] = defaultdict(Counter)
    by_field: dict[str, Counter[str]] = defaultdict(Counter)
    roles_of: dict[str, set[str]] = defaultdict(set)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    refused: list[dict[str, Any]] = []
    odd_hours: list[dict[str, Any]] = []
    start, end = work_hours
    for local, e in window:
        outcome = str(e.get("outcome", "unknown"))
        user, role = str(e.get("user", "")), str(e.get("role", ""))
        field = f"{e.get('service', '')}/{e.get('field', '')}"
        outcomes[outcome] += 1
        by_user[user][outcome] += 1
        by_role[role][outcome] += 1
        by_field[field][outcome] += 1
        roles_of[user].add(role)
        per_day[user][local.date().isoformat()] += 1
        brief = {
            "seq": e.get("seq"),
            "time": local.isoformat(timespec="minutes"),
            "user": user,
            "role": role,
            "field": field,
            "outcome": outcome,
        }
        if outcome != "allowed":
            refused.append({**brief, "detail": e.get("detail", ""), "reason": e.get("reason", "")})
        if not start <= local.hour < end:
            odd_hours.append(brief)

    volume = []
    for user, days in sorted(per_day.items()):
        median = statistics.median(days.values())
        for day, count in sorted(days.items()):
            if count > volume_factor * median or count > max_per_day:
                volume.append({"user": user, "day": day, "count": count, "median_per_day": median})

    return {
        "window": {"since": since.isoformat(timespec="seconds"), "until": now.isoformat(timespec="seconds")},
        "totals": {"attempts": len(window), **dict(sorted(outcomes.items()))},
        "by_user": {
            u: {**dict(c), "roles": sorted(roles_of[u])}
            for u, c in sorted(by_user.items(), key=lambda x: x[0])
        },
        "by_role": {r: dict(c) for r, c in sorted(by_role.items())},
        "by_field": {f: dict(c) for f, c in sorted(by_field.items())},
        "denied": refused,
        "policies_in_force": dict(sorted(policies.items())),
        "changes": changes,
        "unusual_volume": volume,
        "unusual_hours": odd_hours,
        "thresholds": {
            "work_hours": f"{start:02d}:00-{end:02d}:00",
            "volume_factor": volume_factor,
            "max_per_day": max_per_day,
        },
    }


_CHANGE_FIELDS = ("policy_sha256", "rules_sha256", "previous_sha256", "source", "key_id", "previous_key_id",
                  "kms", "kms_key", "keys", "detail")  # fmt: skip


def _change(event: str, local: datetime, e: dict[str, Any]) -> dict[str, Any]:
    """A policy change, rules change or key operation, as the review lists it."""
    out = {"seq": e.get("seq"), "time": local.isoformat(timespec="minutes"), "event": event,
           "user": str(e.get("user", ""))}  # fmt: skip
    out.update({k: e[k] for k in _CHANGE_FIELDS if e.get(k) is not None})
    return out


def _counts(c: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items() if k != "roles")


def render_text(report: dict[str, Any], chain_status: str) -> str:
    out = [
        "Decrypt access review",
        f"window: {report['window']['since']} .. {report['window']['until']}",
        f"audit chain: {chain_status}",
        "totals: " + _counts(report["totals"]),
        "",
        "By user:",
    ]
    for user, c in report["by_user"].items():
        out.append(f"  {user:<20} {_counts(c)}  (roles: {', '.join(c['roles'])})")
    out += ["", "By role:"]
    out += [f"  {role:<20} {_counts(c)}" for role, c in report["by_role"].items()]
    out += ["", "By field (service/attribute):"]
    out += [f"  {field:<40} {_counts(c)}" for field, c in report["by_field"].items()]
    out += ["", f"Denied or failed attempts: {len(report['denied'])}"]
    out += [
        f"  seq {d['seq']} {d['time']} {d['user']} as {d['role']} on {d['field']}: "
        f"{d['outcome']} - {d['detail']}"
        for d in report["denied"]
    ]
    out += ["", "Access policies in force (sha256: attempts):"]
    out += [f"  {sha or '(none recorded)'}: {n}" for sha, n in report["policies_in_force"].items()]
    out += ["", f"Policy changes, rules changes and key operations: {len(report['changes'])}"]
    for c in report["changes"]:
        extra = ", ".join(f"{k} {c[k]}" for k in _CHANGE_FIELDS if k in c)
        out.append(f"  seq {c['seq']} {c['time']} {c['event']} by {c['user']}: {extra}")
    t = report["thresholds"]
    out += [
        "",
        f"Unusual volume (> {t['volume_factor']:g}x the user's median per day, or > {t['max_per_day']}/day): "
        f"{len(report['unusual_volume'])}",
    ]
    out += [
        f"  {v['user']} on {v['day']}: {v['count']} attempts (median {v['median_per_day']:g})"
        for v in report["unusual_volume"]
    ]
    out += ["", f"Outside working hours ({t['work_hours']}): {len(report['unusual_hours'])}"]
    out += [
        f"  seq {h['seq']} {h['time']} {h['user']} as {h['role']} on {h['field']} ({h['outcome']})"
        for h in report["unusual_hours"]
    ]
    return "\n".join(out) + "\n"
