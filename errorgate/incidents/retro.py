"""A team's retrospective from the incident store: its incidents and their KPIs, the error
categories and alerts that recur, what is new, open postmortems, and the design standards the
top recurring categories call for.

The source is the incident store only: categories are the ``category`` labels of the alerts the
engine received (errorgate's error-rate alerts carry classify's category), and "fingerprints"
are Alertmanager's alert fingerprints (one per label set), not classify's error fingerprints,
which never reach an alert. An error that never raised an alert is not in this report.

Trends count, per ISO week (Monday, UTC) of the incident's opening, the incidents of each top
category. "Services that break a standard" count, per standard, the incidents of each service
whose alerts carry a category that standard covers (standards.yaml's mapping)."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from errorgate.incidents.actions import ActionItems, counts
from errorgate.incidents.engine import Engine, Incident, rfc3339
from errorgate.incidents.report import fmt_seconds, kpis
from errorgate.incidents.retro_charts import weekly_svg
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
    rows = _alert_rows(engine, [i.id for i in window])
    opened = {i.id: i.opened_at for i in window}
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
        "trends": _trends(rows, opened, [c for c, _ in top_cats], since, now),
        "standards_breakers": _breakers(rows, standards_for),
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


def _week(ts: float) -> date:
    day = datetime.fromtimestamp(ts, UTC).date()
    return day - timedelta(days=day.weekday())


def _trends(
    rows: list[Any], opened: dict[int, float], top: list[str], since: float, now: float
) -> dict[str, Any]:
    """Incidents per week of the top categories; every week of the window, empty ones as 0."""
    weeks = [_week(since)]
    while weeks[-1] < _week(now):
        weeks.append(weeks[-1] + timedelta(days=7))
    index = {w: n for n, w in enumerate(weeks)}
    counts = {c: [0] * len(weeks) for c in top}
    counted: set[tuple[int, str]] = set()  # an incident with several alerts of a category counts once
    for row in rows:
        category = json.loads(row.labels).get("category")
        if category in counts and (row.incident_id, category) not in counted:
            counted.add((row.incident_id, category))
            counts[category][index[_week(opened[row.incident_id])]] += 1
    return {"weeks": [w.isoformat() for w in weeks], "categories": counts}


def _breakers(rows: list[Any], standards_for: StandardsFor) -> list[dict[str, Any]]:
    """Per standard, the services whose incidents fall most often in the categories it covers;
    the most-broken standards first."""
    hits: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    texts: dict[str, str] = {}
    for row in rows:
        labels = json.loads(row.labels)
        category, service = labels.get("category"), labels.get("service")
        if not category or not service:
            continue
        for name, text in standards_for(category):
            texts[name] = text
            hits[name][service].add(row.incident_id)
    ranked = []
    for name, by_service in hits.items():
        services = sorted(by_service.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ranked.append({
            "standard": name, "text": texts[name], "incidents": len(set().union(*by_service.values())),
            "services": [{"service": svc, "incidents": len(ids)} for svc, ids in services[:TOP]],
        })  # fmt: skip
    return sorted(ranked, key=lambda s: (-s["incidents"], s["standard"]))


def _services(standard: dict[str, Any]) -> str:
    return ", ".join(f"{s['service']} ({s['incidents']})" for s in standard["services"])


def _md_trends(retro: dict[str, Any]) -> list[str]:
    trends = retro["trends"]
    cats = list(trends["categories"])
    lines = ["## Trends: incidents per week of the top categories", ""]
    if not cats:
        return [*lines, "- no categorized alerts"]
    lines += ["| week | " + " | ".join(cats) + " |", "|---|" + "---:|" * len(cats)]
    for n, week in enumerate(trends["weeks"]):
        lines.append(f"| {week} | " + " | ".join(str(trends["categories"][c][n]) for c in cats) + " |")
    lines += ["", "## Services that break the standards most", ""]
    lines += [f"- `{s['standard']}`: {_services(s)}" for s in retro["standards_breakers"]] or ["- none"]
    return lines


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
    lines += ["", *_md_trends(retro)]
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
    breakers = "".join(
        f"<tr><td>{e(s['standard'])}</td><td>{e(_services(s))}</td></tr>" for s in retro["standards_breakers"]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>errorgate retrospective</title></head><body>"
        f"<h1>Retrospective: {e(retro['team'])}</h1><p>{e(retro['since'])} – {e(retro['until'])}. "
        f"Source: {e(retro['source'])}.</p><h2>Incidents</h2><table><tr><th>id</th><th>severity</th>"
        f"<th>title</th><th>MTTD</th><th>MTTA</th><th>MTTR</th></tr>{rows}</table>"
        f"<h2>Top error categories</h2><ul>{cats}</ul>"
        f"<h2>Trends</h2><figure>{weekly_svg(retro['trends'])}<figcaption>incidents per week of the top "
        "categories</figcaption></figure><h2>Services that break the standards most</h2>"
        f"<table><tr><th>standard</th><th>services (incidents)</th></tr>{breakers}</table>"
        f"<h2>Open action items</h2><ul>{items}</ul>"
        f"<h2>Action items (owned by the team)</h2><p>open {a['open']}, closed {a['closed']}, "
        f"overdue {a['overdue']}</p><ul>{owned}</ul></body></html>"
    )
