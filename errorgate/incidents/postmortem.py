"""Mandatory, blameless P1 postmortems in Jira (REST API v2 through the ``jira`` client).

A P1 incident gets an issue pre-filled from its timeline and KPIs with a blameless template;
the incident cannot be closed until the issue's status is done (polled every
``incidents.jira.poll_interval``)."""

from __future__ import annotations

import logging
import os
from typing import Any

from jira import JIRA
from jira.exceptions import JIRAError
from requests.exceptions import RequestException

from errorgate.config import JiraConfig
from errorgate.incidents.engine import Engine, Incident, rfc3339
from errorgate.incidents.report import kpis

log = logging.getLogger("errorgate.incidents")

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
    def __init__(self, engine: Engine, cfg: JiraConfig, client: JIRA | None = None) -> None:
        self.engine = engine
        self.cfg = cfg
        token = os.environ.get(cfg.token_env)
        if client is None and not token:
            raise ValueError(f"incidents.jira.token_env: environment variable {cfg.token_env} is not set")
        self.client = client or JIRA(server=cfg.url, token_auth=token, get_server_info=False,
                                     options={"rest_api_version": "2"}, max_retries=0)  # fmt: skip
        self.polled: dict[int, float] = {}

    def tick(self) -> None:
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved")):
            if inc.severity != "P1":
                continue
            try:
                if not inc.postmortem_key:
                    self._file(inc)
                elif not inc.postmortem_done:
                    self._poll(inc)
            except (JIRAError, RequestException) as e:
                log.warning("incident %s: Jira: %s", inc.id, getattr(e, "status_code", type(e).__name__))

    def _file(self, inc: Incident) -> None:
        fields = {
            "project": {"key": self.cfg.project},
            "issuetype": {"name": self.cfg.issue_type},
            "summary": f"Postmortem: {inc.title} (incident {inc.id})"[:255],
            "description": render(inc, self.engine.timeline(inc.id)),
            "labels": ["errorgate-postmortem", f"errorgate-incident-{inc.id}"],
        }
        issue = self.client.create_issue(fields=fields)
        self.polled[inc.id] = self.engine.clock()  # just read back: the next look is a poll away
        status = str(issue.fields.status.name)
        self.engine.record(inc.id, "postmortem", "engine", f"postmortem {issue.key} filed in Jira",
                           postmortem_key=issue.key, postmortem_status=status, postmortem_done=False)  # fmt: skip

    def _poll(self, inc: Incident) -> None:
        now = self.engine.clock()
        if now - self.polled.get(inc.id, 0.0) < self.cfg.poll_interval:
            return
        self.polled[inc.id] = now
        issue = self.client.issue(str(inc.postmortem_key), fields="status")
        status = issue.raw["fields"]["status"]
        name = str(status.get("name", ""))
        category = str((status.get("statusCategory") or {}).get("key", ""))
        done = name in self.cfg.done_statuses or category == "done"
        if name != inc.postmortem_status or done:
            self.engine.record(inc.id, "postmortem", "jira", f"postmortem {inc.postmortem_key} is {name}",
                               postmortem_status=name, postmortem_done=done)  # fmt: skip
