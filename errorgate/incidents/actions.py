"""A postmortem's action items: each owned by a team, filed in Jira as an issue linked to the
postmortem (by ``postmortem.Postmortems``), its state kept current by poll or Jira webhook and
counted in ``errorgate incidents report`` and ``errorgate report retro`` (open, closed, overdue).

``POST /api/v1/incidents/{id}/actions`` (Bearer token) with ``{"team", "summary", "due"}`` adds
one; ``GET /api/v1/incidents/{id}/actions`` lists them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from errorgate.incidents.engine import Engine, rfc3339
from errorgate.incidents.http import Api, Request, Response
from errorgate.incidents.store import action_items

_TEAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ROUTE = re.compile(r"/api/v1/incidents/(\d+)/actions")


class ActionItemError(ValueError):
    """A malformed action item; the message names the field."""


@dataclass
class ActionItem:
    id: int
    incident_id: int
    team: str
    summary: str
    due_at: float | None
    created_at: float
    jira_key: str | None
    status: str | None
    done: bool
    done_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> ActionItem:
        values = dict(row._mapping)
        values["done"] = bool(values["done"])
        return cls(**values)

    def overdue(self, now: float) -> bool:
        return not self.done and self.due_at is not None and self.due_at < now

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "id": str(self.id), "incident": str(self.incident_id), "team": self.team, "summary": self.summary,
            "key": self.jira_key, "status": self.status or ("pending" if not self.jira_key else None),
            "done": self.done, "due": rfc3339(self.due_at), "overdue": self.overdue(now),
        }  # fmt: skip


def parse_item(body: bytes) -> tuple[str, str, float | None]:
    """(team, summary, due) from a request body, or ActionItemError naming the field."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError as e:
        raise ActionItemError(f"body: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ActionItemError("body: must be a JSON object")
    team, summary, due = doc.get("team"), doc.get("summary"), doc.get("due")
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        raise ActionItemError("team: required, letters, digits, '.', '_' or '-' (up to 64)")
    if not isinstance(summary, str) or not summary.strip() or len(summary) > 200:
        raise ActionItemError("summary: required, 1 to 200 characters")
    if due is None:
        return team, summary.strip(), None
    if not isinstance(due, str):
        raise ActionItemError("due: a date, YYYY-MM-DD")
    try:
        day = datetime.strptime(due, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ActionItemError("due: a date, YYYY-MM-DD") from None
    return team, summary.strip(), day.timestamp() + 86400 - 1  # due by the end of that day (UTC)


def counts(items: list[ActionItem], now: float) -> dict[str, int]:
    return {
        "open": sum(not i.done for i in items),
        "closed": sum(i.done for i in items),
        "overdue": sum(i.overdue(now) for i in items),
    }


class ActionItems:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.api: Api | None = None

    def add(self, incident_id: int, team: str, summary: str, due_at: float | None, actor: str) -> ActionItem:
        self.engine.get(incident_id)  # NotFound -> 404
        with self.engine.lock, self.engine.store.begin() as conn:
            result = conn.execute(
                action_items.insert().values(incident_id=incident_id, team=team, summary=summary, due_at=due_at,
                                             created_at=self.engine.clock(), done=False)
            )  # fmt: skip
            inserted = result.inserted_primary_key
            assert inserted is not None  # an INSERT of one row always has its key
        item_id = int(inserted[0])
        self.engine.record(incident_id, "action_item", actor, f"action item {item_id} added for team {team}")
        return self.get(item_id)

    def get(self, item_id: int) -> ActionItem:
        with self.engine.store.begin() as conn:
            row = conn.execute(sa.select(action_items).where(action_items.c.id == item_id)).one()
        return ActionItem.from_row(row)

    def find(self, incident_ids: list[int] | None = None, key: str | None = None) -> list[ActionItem]:
        query = sa.select(action_items).order_by(action_items.c.id)
        if incident_ids is not None:
            query = query.where(action_items.c.incident_id.in_(incident_ids))
        if key is not None:
            query = query.where(action_items.c.jira_key == key)
        with self.engine.store.begin() as conn:
            return [ActionItem.from_row(r) for r in conn.execute(query)]

    def pending(self) -> list[ActionItem]:
        """Items not filed in Jira yet, or filed and not done (to poll)."""
        query = sa.select(action_items).where(action_items.c.done == sa.false()).order_by(action_items.c.id)
        with self.engine.store.begin() as conn:
            return [ActionItem.from_row(r) for r in conn.execute(query)]

    def update(self, item: ActionItem, **values: Any) -> None:
        """Set Jira's key or state; a change of state goes on the incident's timeline."""
        if values.get("done") and not item.done:
            values["done_at"] = self.engine.clock()
        with self.engine.lock, self.engine.store.begin() as conn:
            conn.execute(action_items.update().where(action_items.c.id == item.id).values(**values))

    def install(self, api: Api) -> None:
        self.api = api
        api.patterns.append(("POST", _ROUTE, self._post))
        api.patterns.append(("GET", _ROUTE, self._list))

    def _post(self, req: Request) -> Response:
        m = _ROUTE.fullmatch(req.path)
        assert m is not None  # routed by this pattern
        assert self.api is not None  # routed by the api it was installed in
        denied = self.api.authorize(req, "action_item", m.group(1))
        if denied:
            return denied
        try:
            team, summary, due = parse_item(req.body)
        except ActionItemError as e:
            return Response(400, {"error": str(e)})
        item = self.add(int(m.group(1)), team, summary, due, req.actor)
        self.api.on_change()  # the worker files it in Jira now, not at its next tick
        return Response(201, item.to_json(self.engine.clock()))

    def _list(self, req: Request) -> Response:
        m = _ROUTE.fullmatch(req.path)
        assert m is not None  # routed by this pattern
        incident_id = int(m.group(1))
        self.engine.get(incident_id)
        now = self.engine.clock()
        return Response(200, {"action_items": [i.to_json(now) for i in self.find([incident_id])]})
