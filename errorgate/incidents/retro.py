"""A team's retrospective from the incident store: its incidents and their KPIs, the error
categories and alerts that recur, what is new, open postmortems, and the design standards the
top recurring categories call for.

The source is the incident store only: categories are the ``category`` labels of the alerts the
engine received (errorgate's error-rate alerts carry classify's category), and "fingerprints"
are Alertmanager's alert fingerprints (one per label set), not classify's error fingerprints,
which never reach an alert. An error that never raised an alert is not in this report."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from errorgate.incidents.actions import ActionItems, counts
from errorgate.incidents.engine import Engine, Incident, rfc3339
from errorgate.incidents.report import fmt_seconds, kpis
from errorgate.incidents.store import alerts

TOP = 5
# (name, text) of the standards a category calls for (governance/standards.yaml).
StandardsFor = Callable[[str], list[tuple[str, str]]]


def _alert_rows(engine: Engine, ids: list[int]) -> list[Any]:
    if not ids:
        return []
    with engine.store.begin() as conn:
        return list(conn.execute(sa.select(alerts).where(alerts.c.incident_id.in_(ids))))


def _seen(rows: list[Any]) -> tuple[dict[str, set[int]], dict[str, set[int]], dict[str, str]]:
    """Incidents per category and per alert fingerprint; a name per fingerprint."""
    categories: dict[str, set[int]] = defaultdict(set)
    fingerprints: dict[str, set[int]] = defaultdict(set)
    names: dict[str, str] = {}
    for row in rows:
        labels = json.loads(row.labels)
        if labels.get("category"):
            categories[labels["category"]].add(row.incident_id)
        fingerprints[row.fingerprint].add(row.incident_id)
        names[row.fingerprint] = f"{row.alertname} {labels.get('service', '')}".strip()
    return categories, fingerprints, names


def build_retro(
    engine: Engine, team: str, since: float, now: float, standards_for: StandardsFor
) -> dict[str, Any]:
    everything = [i for i in engine.find() if i.team == team]
    window = [i for i in everything if since <= i.opened_at <= now]
    before = [i for i in everything if i.opened_at < since]
    cats, fps, names = _seen(_alert_rows(engine, [i.id for i in window]))
    old_cats, old_fps, _ = _seen(_alert_rows(engine, [i.id for i in before]))
    top_cats = sorted(cats.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP]
    return {
        "team": team,
        "since": rfc3339(since),
        "until": rfc3339(now),
        "source": "incident store: alerts received by the engine (category label, Alertmanager fingerprint)",
        "incidents": [_incident(i) for i in sorted(window, key=lambda i: i.opened_at)],
        "top_categories": [
            {
                "category": c,
                "incidents": len(ids),
                "recurring": len(ids) > 1 or c in old_cats,
                "standards": [{"name": n, "text": t} for n, t in standards_for(c)],
            }
            for c, ids in top_cats
        ],
        "top_fingerprints": [
            {
                "fingerprint": fp,
                "alert": names[fp],
                "incidents": len(ids),
                "recurring": len(ids) > 1 or fp in old_fps,
            }
            for fp, ids in sorted(fps.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP]
        ],
        "new_categories": sorted(c for c in cats if c not in old_cats),
        "recurring_categories": sorted(c for c in cats if c in old_cats or len(cats[c]) > 1),
        "open_action_items": [
            {"incident": str(i.id), "postmortem": i.postmortem_key, "status": i.postmortem_status}
            for i in everything
            if i.postmortem_key and not i.postmortem_done
        ],
        "review_queue": [
            _incident(i) for i in everything if i.severity == "P4" and i.status in ("open", "acknowledged")
        ],
        "action_items": _action_items(engine, team, now),
    }


def _action_items(engine: Engine, team: str, now: float) -> dict[str, Any]:
    """The team's own action items (any incident's): counts, and the open ones oldest first."""
    mine = [a for a in ActionItems(engine).find() if a.team == team]
    open_items = [a.to_json(now) for a in mine if not a.done]
    return {**counts(mine, now), "open_items": open_items}


def _incident(inc: Incident) -> dict[str, Any]:
    return {"id": str(inc.id), "severity": inc.severity, "status": inc.status, "title": inc.title,
            "services": inc.services, "opened_at": rfc3339(inc.opened_at), **kpis(inc)}  # fmt: skip


def _md_incidents(retro: dict[str, Any]) -> list[str]:
    lines = [
        "## Incidents",
        "",
        "| id | severity | status | title | MTTD | MTTA | MTTR |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for i in retro["incidents"]:
        lines.append(
            f"| {i['id']} | {i['severity']} | {i['status']} | {i['title'].replace('|', '/')} | "
            f"{fmt_seconds(i['mttd_seconds'])} | {fmt_seconds(i['mtta_seconds'])} | {fmt_seconds(i['mttr_seconds'])} |"
        )
    return lines


def to_markdown(retro: dict[str, Any]) -> str:
    lines = [f"# Retrospective: team {retro['team']}, {retro['since']} – {retro['until']}", "",
             f"Source: {retro['source']}.", ""]  # fmt: skip
    lines += _md_incidents(retro)
    lines += ["", "## Top error categories", ""]
    for c in retro["top_categories"]:
        tag = "recurring" if c["recurring"] else "new"
        lines.append(f"- **{c['category']}** ({tag}, {c['incidents']} incident(s))")
        lines += [f"  - standard `{s['name']}`: {s['text']}" for s in c["standards"]]
    lines += ["", "## Top alerts (Alertmanager fingerprints)", ""]
    lines += [
        f"- {f['alert']} `{f['fingerprint']}`: {f['incidents']} incident(s)"
        for f in retro["top_fingerprints"]
    ]
    lines += ["", "## Open action items", ""]
    lines += [f"- postmortem {a['postmortem']} of incident {a['incident']}: {a['status']}"
              for a in retro["open_action_items"]] or ["- none"]  # fmt: skip
    a = retro["action_items"]
    lines += ["", "## Action items (owned by the team)", "",
              f"open {a['open']}, closed {a['closed']}, overdue {a['overdue']}", ""]  # fmt: skip
    lines += [f"- {i['key'] or 'not filed yet'} ({i['status']}){' OVERDUE' if i['overdue'] else ''}, "
              f"due {i['due'] or '-'}, incident {i['incident']}: {i['summary']}" for i in a["open_items"]]  # fmt: skip
    lines += ["", "## Review queue (P4)", ""]
    lines += [f"- #{i['id']} {i['title']}" for i in retro["review_queue"]] or ["- empty"]
    return "\n".join(lines) + "\n"


def to_html(retro: dict[str, Any]) -> str:
    e = html.escape
    cats = "".join(
        f"<li><b>{e(c['category'])}</b> ({'recurring' if c['recurring'] else 'new'}, {c['incidents']})<ul>"
        + "".join(f"<li><code>{e(s['name'])}</code>: {e(s['text'])}</li>" for s in c["standards"])
        + "</ul></li>"
        for c in retro["top_categories"]
    )
    rows = "".join(
        f"<tr><td>{e(i['id'])}</td><td>{e(i['severity'])}</td><td>{e(i['title'])}</td>"
        f"<td>{fmt_seconds(i['mttd_seconds'])}</td><td>{fmt_seconds(i['mtta_seconds'])}</td><td>{fmt_seconds(i['mttr_seconds'])}</td></tr>"
        for i in retro["incidents"]
    )
    items = "".join(
        f"<li>{e(str(a['postmortem']))} ({e(str(a['status']))})</li>" for a in retro["open_action_items"]
    )
    a = retro["action_items"]
    owned = "".join(
        f"<li>{e(str(i['key'] or 'not filed yet'))} ({e(str(i['status']))}{', overdue' if i['overdue'] else ''}): "
        f"{e(i['summary'])}</li>"
        for i in a["open_items"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>errorgate retrospective</title></head><body>"
        f"<h1>Retrospective: {e(retro['team'])}</h1><p>{e(retro['since'])} – {e(retro['until'])}. "
        f"Source: {e(retro['source'])}.</p><h2>Incidents</h2><table><tr><th>id</th><th>severity</th>"
        f"<th>title</th><th>MTTD</th><th>MTTA</th><th>MTTR</th></tr>{rows}</table>"
        f"<h2>Top error categories</h2><ul>{cats}</ul><h2>Open action items</h2><ul>{items}</ul>"
        f"<h2>Action items (owned by the team)</h2><p>open {a['open']}, closed {a['closed']}, "
        f"overdue {a['overdue']}</p><ul>{owned}</ul></body></html>"
    )
