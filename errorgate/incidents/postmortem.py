"""Mandatory, blameless P1 postmortems in Jira (REST API v2 through the ``jira`` client).

A P1 incident gets an issue pre-filled from its timeline and KPIs with a blameless template,
checked first by the reviewer check (``review``: blame wording, personal names; flagged issues get
the label ``errorgate-review-flagged``). The incident cannot be closed until the issue's status
is done: polled every ``incidents.jira.poll_interval``, or told at once by the Jira webhook
(``jira_webhook``). Action items (``actions``) are filed as issues linked to the postmortem and
tracked the same way.

With ``ha:`` (several engines on one store), filing a postmortem or an action item is a fenced
singleton like a page: claimed in the ledger before Jira is called, so only the leader files,
once. The Jira key is claimed too right after the issue exists: a successor of a leader that
died before its store write records that issue instead of filing a second one."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jira import JIRA
from jira.exceptions import JIRAError
from requests.exceptions import RequestException

from errorgate.config import JiraConfig
from errorgate.ha.ledger import Ledger
from errorgate.incidents.actions import ActionItem, ActionItems
from errorgate.incidents.engine import Conflict, Engine, Incident, rfc3339
from errorgate.incidents.http import Api, Request, Response
from errorgate.incidents.report import kpis
from errorgate.incidents.review import Reviewer, summary

log = logging.getLogger("errorgate.incidents")
_CHECK_ROUTE = re.compile(r"/api/v1/incidents/(\d+)/postmortem/check")

TEMPLATE = """h2. Summary
{title} ({severity}), services: {services}. Team: {team}.

h2. Impact and response times
* First error: {first_error_at}
* Detected (incident opened): {opened_at} — time to detect {mttd}
* Acknowledged: {acknowledged_at} — time to acknowledge {mtta}
* Resolved: {resolved_at} — time to resolve {mttr}

h2. Timeline (from errorgate)
{timeline}

h2. Contributing factors
_What conditions made this possible? Describe systems and decisions, not people._

h2. What the system allowed
_Which safeguards were missing or did not trigger?_

h2. What went well

h2. Action items
_Each owned by a team, linked as a Jira issue._
"""


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} s"


def render(inc: Incident, timeline: list[dict[str, Any]]) -> str:
    k = kpis(inc)
    lines = "\n".join(f"* {e['at']} — {e['kind']}: {e['message']}" for e in timeline)
    return TEMPLATE.format(
        title=inc.title, severity=inc.severity, services=", ".join(inc.services) or "–", team=inc.team,
        first_error_at=rfc3339(inc.first_error_at), opened_at=rfc3339(inc.opened_at),
        acknowledged_at=rfc3339(inc.acknowledged_at) or "–", resolved_at=rfc3339(inc.resolved_at) or "–",
        mttd=_secs(k["mttd_seconds"]), mtta=_secs(k["mtta_seconds"]), mttr=_secs(k["mttr_seconds"]),
        timeline=lines,
    )  # fmt: skip


class Postmortems:
    def __init__(
        self,
        engine: Engine,
        cfg: JiraConfig,
        client: JIRA | None = None,
        reviewer: Reviewer | None = None,
        ledger: Ledger | None = None,
        actor: str = "engine",
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        self.ledger = ledger  # None: this instance files alone (no ``ha:``)
        self.actor = actor
        token = os.environ.get(cfg.token_env)
        if client is None and not token:
            raise ValueError(f"incidents.jira.token_env: environment variable {cfg.token_env} is not set")
        self.client = client or JIRA(server=cfg.url, token_auth=token, get_server_info=False,
                                     options={"rest_api_version": "2"}, max_retries=0)  # fmt: skip
        self.actions = ActionItems(engine)
        self.reviewer = reviewer  # None: no reviewer check (incidents.jira.review: false)
        self.polled: dict[str, float] = {}  # Jira key -> when last read

    def tick(self) -> None:
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved")):
            if inc.severity != "P1":
                continue
            try:
                if not inc.postmortem_key:
                    self._file(inc)
                elif not inc.postmortem_done and self._due(inc.postmortem_key):
                    issue = self.client.issue(str(inc.postmortem_key), fields="status")
                    self.apply_status(str(inc.postmortem_key), issue.raw["fields"]["status"], "jira")
            except (JIRAError, RequestException) as e:
                log.warning("incident %s: Jira: %s", inc.id, getattr(e, "status_code", type(e).__name__))
        for item in self.actions.pending():
            try:
                self._track(item)
            except (JIRAError, RequestException) as e:
                log.warning("action item %s: Jira: %s", item.id, getattr(e, "status_code", type(e).__name__))

    def _due(self, key: str) -> bool:
        now = self.engine.clock()
        if now - self.polled.get(key, 0.0) < self.cfg.poll_interval:
            return False
        self.polled[key] = now
        return True

    def _claim(self, inc: Incident, action: str, value: str) -> tuple[bool, str]:
        if self.ledger is None:
            return True, ""
        return self.ledger.claim(f"{inc.claim_key}/{action}", value)

    def _attempt(self, inc: Incident, action: str) -> str:
        """The claim of the next attempt at filing ``action``: attempt n+1 once n is marked failed
        (Jira refused or was out of reach), so a Jira outage delays the filing, never cancels it."""
        n = 0
        while self.ledger is not None and self.ledger.recorded(f"{inc.claim_key}/{action}/{n}/failed"):
            n += 1
        return f"{action}/{n}"

    def _create(
        self, inc: Incident, action: str, fields: Callable[[], dict[str, Any]]
    ) -> tuple[Any, str | None]:
        """File ``action``'s issue, claimed first with ``ha:``: (issue, None) when filed here,
        (None, key) when another instance filed it under the same claim, (None, None) when not
        now (a standby, a deposed leader, no etcd quorum, or the key is not known)."""
        name = self._attempt(inc, action)
        claimed, why = self._claim(inc, name, "filing")
        if not claimed:
            known = (
                self.ledger.recorded(f"{inc.claim_key}/{name}/key") if self.ledger and why == "done" else None
            )
            return None, known
        try:
            issue = self.client.create_issue(fields=fields())
        except (JIRAError, RequestException):
            self._claim(inc, f"{name}/failed", "1")  # nothing filed: the next attempt is a new claim
            raise
        # Before the store write: a successor of a leader that dies now finds the issue here.
        self._claim(inc, f"{name}/key", issue.key)
        return issue, None

    def _file(self, inc: Incident) -> None:
        findings: list[Any] = []

        def fields() -> dict[str, Any]:
            description = render(inc, self.engine.timeline(inc.id))
            findings.extend(self.reviewer.check(description) if self.reviewer else [])
            return {
                "project": {"key": self.cfg.project},
                "issuetype": {"name": self.cfg.issue_type},
                "summary": f"Postmortem: {inc.title} (incident {inc.id})"[:255],
                "description": description,
                "labels": ["errorgate-postmortem", f"errorgate-incident-{inc.id}"]
                + (["errorgate-review-flagged"] if findings else []),
            }

        issue, elsewhere = self._create(inc, "postmortem", fields)
        if elsewhere is not None:
            self._filed_elsewhere(inc, elsewhere)
        if issue is None:
            return
        self.polled[issue.key] = self.engine.clock()  # just read back: the next look is a poll away
        status = str(issue.fields.status.name)
        self.engine.record(inc.id, "postmortem", self.actor, f"postmortem {issue.key} filed in Jira",
                           postmortem_key=issue.key, postmortem_status=status, postmortem_done=False)  # fmt: skip
        if self.reviewer:
            self.engine.record(inc.id, "review", self.actor, f"postmortem {issue.key} {summary(findings)}")

    def _filed_elsewhere(self, inc: Incident, key: str) -> None:
        """Write down the postmortem a leader filed and died before recording."""
        issue = self.client.issue(key, fields="status")
        status, done = self.status(issue.raw["fields"]["status"])
        self.polled[key] = self.engine.clock()
        self.engine.record(inc.id, "postmortem", self.actor,
                           f"postmortem {key} filed in Jira (claimed by another instance)",
                           postmortem_key=key, postmortem_status=status, postmortem_done=done)  # fmt: skip

    def status(self, status: dict[str, Any]) -> tuple[str, bool]:
        """(name, done) of a Jira status: done by name (``done_statuses``) or by its category."""
        name = str(status.get("name", ""))
        category = str((status.get("statusCategory") or {}).get("key", ""))
        return name, name in self.cfg.done_statuses or category == "done"

    def apply_status(self, key: str, status: dict[str, Any], via: str) -> bool:
        """A status read by poll or sent by the webhook, for a postmortem or an action item;
        False when ``key`` is neither."""
        name, done = self.status(status)
        matched = False
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved")):
            if inc.postmortem_key != key:
                continue
            matched = True
            if name != inc.postmortem_status or done != inc.postmortem_done:
                self.engine.record(inc.id, "postmortem", via, f"postmortem {key} is {name}",
                                   postmortem_status=name, postmortem_done=done)  # fmt: skip
        for item in self.actions.find(key=key):
            matched = True
            if name != item.status or done != item.done:
                self.actions.update(item, status=name, done=done)
                self.engine.record(
                    item.incident_id, "action_item", via, f"action item {key} ({item.team}) is {name}"
                )
        return matched

    def _track(self, item: ActionItem) -> None:
        if item.jira_key:
            if self._due(item.jira_key):
                issue = self.client.issue(item.jira_key, fields="status")
                self.apply_status(item.jira_key, issue.raw["fields"]["status"], "jira")
            return
        inc = self.engine.get(item.incident_id)
        if inc.severity == "P1" and not inc.postmortem_key:
            return  # filed once its postmortem exists, so it can be linked
        self._file_action(item, inc)

    def _file_action(self, item: ActionItem, inc: Incident) -> None:
        def fields() -> dict[str, Any]:
            found: dict[str, Any] = {
                "project": {"key": self.cfg.project},
                "issuetype": {"name": self.cfg.issue_type},
                "summary": f"Action item (incident {inc.id}): {item.summary}"[:255],
                "description": f"Action item of incident {inc.id} ({inc.title}), owned by team {item.team}."
                + (f" Postmortem: {inc.postmortem_key}." if inc.postmortem_key else ""),
                "labels": ["errorgate-action-item", f"errorgate-incident-{inc.id}", f"team-{item.team}"],
            }
            if item.due_at is not None:
                found["duedate"] = datetime.fromtimestamp(item.due_at, UTC).date().isoformat()
            return found

        issue, elsewhere = self._create(inc, f"action/{item.id}", fields)
        if elsewhere is not None:  # filed by a leader that died before recording it
            raw = self.client.issue(elsewhere, fields="status").raw
            status, done = self.status(raw["fields"]["status"])
            self.actions.update(item, jira_key=elsewhere, status=status, done=done)
            self.engine.record(inc.id, "action_item", self.actor,
                               f"action item {elsewhere} ({item.team}) filed (claimed by another instance)")  # fmt: skip
        if issue is None:
            return
        self.polled[issue.key] = self.engine.clock()
        status, done = self.status(issue.raw["fields"]["status"])
        self.actions.update(item, jira_key=issue.key, status=status, done=done)
        if inc.postmortem_key:
            comment = {
                "body": f"Action item of postmortem {inc.postmortem_key} (errorgate incident {inc.id})"
            }
            self.client.create_issue_link(self.cfg.action_link_type, issue.key, inc.postmortem_key, comment)
        linked = f", linked to {inc.postmortem_key}" if inc.postmortem_key else ""
        self.engine.record(
            inc.id, "action_item", self.actor, f"action item {issue.key} ({item.team}) filed{linked}"
        )

    def check(self, incident_id: int) -> dict[str, Any]:
        """The reviewer check on the postmortem's text as it is in Jira now."""
        inc = self.engine.get(incident_id)
        if not inc.postmortem_key:
            raise Conflict(f"incident {incident_id} has no postmortem in Jira yet")
        if self.reviewer is None:
            raise Conflict("incidents.jira.review is false: the reviewer check is off")
        issue = self.client.issue(inc.postmortem_key, fields="description")
        text = str(issue.raw["fields"].get("description") or "")
        findings = self.reviewer.check(text)
        return {"incident": str(incident_id), "postmortem": inc.postmortem_key,
                "findings": [f.to_json() for f in findings]}  # fmt: skip

    def install(self, api: Api) -> None:
        self.actions.install(api)
        api.patterns.append(("GET", _CHECK_ROUTE, self._check_route))

    def _check_route(self, req: Request) -> Response:
        m = _CHECK_ROUTE.fullmatch(req.path)
        assert m is not None  # routed by this pattern
        try:
            return Response(200, self.check(int(m.group(1))))
        except (JIRAError, RequestException) as e:
            return Response(
                502,
                {"error": f"incidents.jira.url: Jira answered {getattr(e, 'status_code', type(e).__name__)}"},
            )
