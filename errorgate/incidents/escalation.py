"""Escalation: an unacknowledged incident pages its team's chain level by level (each level's
``wait`` apart, the chain repeated ``repeat`` times) and stops at the acknowledgement, from the
API or from PagerDuty (v3 webhook). The paging tools then hear the ack and the resolve under the
incident's dedup key, so their own escalation stops too. Every page is on the timeline.

A page a channel refuses is retried with backoff under the same dedup key (the vendor keeps one
alert), each attempt on the timeline, until it is delivered, the incident is acknowledged or
resolved, a later level supersedes it, or the attempts run out (then it is counted in
``errorgate_incident_pages_given_up_total`` and audited). Retries wait on their own schedule, so
a failing channel never holds back the next level. They are kept in memory: an engine that
restarts has still paged the level on its other channels and pages the next one on time."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from errorgate.config import PageRetryConfig
from errorgate.ha.ledger import Ledger
from errorgate.incidents.engine import Engine, Incident
from errorgate.incidents.http import Request, Response
from errorgate.incidents.notify import Channel, DeliveryError, Page

log = logging.getLogger("errorgate.incidents")

# P4 incidents are the review queue (P4 and review alerts are routed here): read in
# `errorgate report retro` and the web page, never paged.
REVIEW_SEVERITY = "P4"
Chain = tuple[list[tuple[float, list[str]]], int, list[str]]  # (wait, targets) per level, repeat, channels


class Directory(Protocol):
    """Who to page: implemented by the on-call rotations (governance/oncall.py)."""

    def chain(self, team: str) -> Chain | None: ...

    def resolve_target(self, team: str, target: str, at: float) -> str | None: ...


@dataclass
class PendingPage:
    """A page one channel refused, waiting for its next attempt."""

    incident_id: int
    channel: str
    person: str
    level: int
    attempts: int  # made so far
    due: float


class Escalator:
    """Pages and follow-ups are claimed in ``ledger`` before they are sent when the engine runs
    on several instances (``ha:``): only the leader sends, at most once per level, and a
    standby taking over finds the levels already paged in the claims. Without a ledger this
    instance is alone and the store is the record."""

    def __init__(
        self,
        engine: Engine,
        directory: Directory,
        channels: dict[str, Channel],
        link: str,
        ledger: Ledger | None = None,
        actor: str = "engine",
        *,
        retry: PageRetryConfig | None = None,
    ) -> None:
        self.engine = engine
        self.directory = directory
        self.channels = channels
        self.link = link.rstrip("/")
        self.retry = retry or PageRetryConfig()
        self.pending: dict[tuple[int, str, str], PendingPage] = {}  # by (incident, channel, person)
        self.retried = Counter(
            "errorgate_incident_page_retries_total", "Page re-sends after a channel refused, by outcome",
            ("channel", "outcome"), registry=engine.registry,
        )  # fmt: skip
        self.given_up = Counter(
            "errorgate_incident_pages_given_up_total", "Pages abandoned after every attempt failed",
            ("channel",), registry=engine.registry,
        )  # fmt: skip
        self.ledger = ledger
        self.actor = actor

    def _claim(self, inc: Incident, action: str, value: str) -> tuple[bool, str]:
        if self.ledger is None:
            return True, ""
        return self.ledger.claim(f"{inc.claim_key}/{action}", value)

    def tick(self) -> None:
        """Page what is due, and tell the tools about acks and resolves."""
        found = self.engine.find(statuses=("open", "acknowledged", "resolved", "closed"))
        for inc in found:
            if inc.status == "open" and inc.severity != REVIEW_SEVERITY:
                self._escalate(inc)
            elif inc.status == "acknowledged" and inc.paged == "triggered":
                self._follow_up(inc, "acknowledged")
            elif inc.status in ("resolved", "closed") and inc.paged in ("triggered", "acknowledged"):
                self._follow_up(inc, "resolved")
        # After the levels that are due: a retry never delays the next level.
        self._retry_due({inc.id: inc for inc in found})

    def _steps(self, inc: Incident) -> tuple[list[tuple[float, list[str]]], list[str], int]:
        """(every page in order, the chain repeated), channel names, levels per round."""
        chain = self.directory.chain(inc.team)
        if chain is None:
            return [], [], 1
        levels, repeat, names = chain
        return levels * (repeat + 1), names, len(levels)

    def _escalate(self, inc: Incident) -> None:
        steps, names, per_round = self._steps(inc)
        step = inc.escalation_step
        if step >= len(steps):
            return
        now = self.engine.clock()
        if step > 0 and inc.escalated_at is not None and now < inc.escalated_at + steps[step - 1][0]:
            return
        level = step % per_round + 1
        claimed, why = self._claim(inc, f"page/{step}", repr(now))
        if not claimed:
            if why == "done":  # paged by a leader that died before writing it down: not again
                self._paged_elsewhere(inc, step, level, now)
            return  # a standby, a deposed leader or no etcd quorum: the leader pages
        people = [p for t in steps[step][1] if (p := self.directory.resolve_target(inc.team, t, now))]
        sent, failed = [], []
        for name in names:
            channel = self.channels.get(name)
            if channel is None:
                continue
            for person in people:
                # A new level replaces the last one's page in the vendor (same dedup key).
                self.pending.pop((inc.id, name, person), None)
                try:
                    channel.trigger(self._page(inc, person, level))
                    sent.append(name)
                except DeliveryError as e:
                    failed.append(str(e))
                    self._schedule(PendingPage(inc.id, name, person, level, 1, now))
        via = ", ".join(sorted(set(sent))) or "no channel"
        message = f"escalation level {level}: paged {', '.join(people) or 'nobody'} via {via}"
        if failed:
            message += f" (failed: {'; '.join(failed)})"
        self.engine.record(inc.id, "escalated", self.actor, message, escalation_step=step + 1, escalated_at=now,
                           paged="triggered" if sent else inc.paged)  # fmt: skip

    def _page(self, inc: Incident, person: str, level: int) -> Page:
        return Page(inc, person, level, f"{self.link}/incidents/{inc.id}")

    def _schedule(self, page: PendingPage) -> bool:
        """Queue the next attempt after ``page.attempts`` failed ones; False when none is left."""
        if page.attempts >= self.retry.attempts:
            return False
        delay = min(self.retry.initial_interval * 2 ** (page.attempts - 1), self.retry.max_interval)
        page.due += delay
        self.pending[(page.incident_id, page.channel, page.person)] = page
        return True

    def _retry_due(self, incidents: dict[int, Incident]) -> None:
        now = self.engine.clock()
        for key, page in list(self.pending.items()):
            inc = incidents.get(page.incident_id)
            if inc is None or inc.status != "open":
                del self.pending[key]  # acknowledged or over: nobody needs paging any more
            elif page.due <= now and (channel := self.channels.get(page.channel)) is not None:
                del self.pending[key]
                self._attempt(inc, channel, page, now)

    def _attempt(self, inc: Incident, channel: Channel, page: PendingPage, now: float) -> None:
        # With ``ha:`` a re-send is a singleton action too: a deposed leader's retry is refused.
        claimed, _ = self._claim(
            inc, f"retry/{page.level}/{page.channel}/{page.person}/{page.attempts + 1}", "1"
        )
        if not claimed:
            return
        page.attempts += 1
        of = f"attempt {page.attempts} of {self.retry.attempts}"
        head = f"escalation level {page.level}"
        try:
            channel.trigger(self._page(inc, page.person, page.level))
        except DeliveryError as e:
            self.retried.labels(page.channel, "failed").inc()
            page.due = now
            if self._schedule(page):
                wait = int(page.due - now)
                message = (
                    f"{head}: paging {page.person} via {page.channel}: {of} failed ({e}); next in {wait}s"
                )
                self.engine.record(inc.id, "page_retry", self.actor, message)
                return
            self.given_up.labels(page.channel).inc()
            self.engine.record(inc.id, "page_failed", self.actor, f"{head}: gave up paging {page.person} via "
                               f"{page.channel} after {page.attempts} attempts ({e})")  # fmt: skip
            self.engine.audit_event(self.actor, f"page:{page.channel}", str(inc.id), "gave-up")
            return
        self.retried.labels(page.channel, "delivered").inc()
        self.engine.record(inc.id, "page_retry", self.actor, f"{head}: paged {page.person} via {page.channel} on {of}",
                           paged="triggered")  # fmt: skip

    def _paged_elsewhere(self, inc: Incident, step: int, level: int, now: float) -> None:
        """Write down a page another instance claimed (and sent) but did not record; the next
        level waits from when it was claimed, as it would have on that instance."""
        assert self.ledger is not None  # "done" comes from a ledger only
        try:
            at = float(self.ledger.recorded(f"{inc.claim_key}/page/{step}") or now)
        except ValueError:
            at = now
        message = f"escalation level {level}: already paged (claimed by another instance)"
        self.engine.record(inc.id, "escalated", self.actor, message, escalation_step=step + 1,
                           escalated_at=min(at, now), paged="triggered")  # fmt: skip

    def _follow_up(self, inc: Incident, state: str) -> None:
        claimed, why = self._claim(inc, f"told/{state}", state)
        if not claimed and why != "done":
            return
        _, names, _ = self._steps(inc)
        for name in names if claimed else ():
            channel = self.channels.get(name)
            if channel is None:
                continue
            try:
                (channel.acknowledge if state == "acknowledged" else channel.resolve)(inc)
            except DeliveryError as e:
                log.warning("incident %s: telling %s failed: %s", inc.id, name, e)
        self.engine.record(inc.id, "paging", self.actor, f"paging tools told: {state}", paged=state)


class Worker:
    """Runs the engine's periodic jobs (escalation, postmortems, silences) on one thread."""

    def __init__(self, jobs: list[Callable[[], None]], interval: float) -> None:
        self.jobs = jobs
        self.interval = interval
        self.wake_event = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="incidents-worker", daemon=True)

    def wake(self) -> None:
        self.wake_event.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for job in self.jobs:
                try:
                    job()
                except Exception:  # one failing job (store down, a tool down) must not stop the others
                    log.exception("incident worker job failed")
            self.wake_event.wait(self.interval)
            self.wake_event.clear()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake_event.set()
        self.thread.join(timeout=10)


def pagerduty_webhook(
    engine: Engine, secret: str | None, on_change: Callable[[], None]
) -> Callable[[Request], Response]:
    """``POST /api/v1/webhooks/pagerduty``: a v3 webhook, signed (``X-PagerDuty-Signature``);
    ``incident.acknowledged`` / ``incident.resolved`` of an errorgate-triggered incident (its
    ``incident_key`` is our dedup key) acknowledge / resolve it here."""

    def handle(req: Request) -> Response:
        if not secret:
            return Response(401, {"error": "incidents.escalation.pagerduty.webhook_secret_env is not set"})
        expected = "v1=" + hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
        given = req.headers.get("x-pagerduty-signature", "").split(",")
        if not any(hmac.compare_digest(expected, g.strip()) for g in given):
            engine.audit_denied("pagerduty", "webhook:pagerduty", "-")
            return Response(401, {"error": "X-PagerDuty-Signature: no valid v1 signature"})
        try:
            event = json.loads(req.body)["event"]
            kind, data = event["event_type"], event["data"]
            key = str(data.get("incident_key") or "")
        except (ValueError, KeyError, TypeError) as e:
            return Response(400, {"error": f"event: not a PagerDuty v3 webhook ({type(e).__name__}: {e})"})
        agent = str((event.get("agent") or {}).get("summary") or "pagerduty")[:64]
        actions = {"incident.acknowledged": "ack", "incident.resolved": "resolve"}
        return _tool_action(engine, key, actions.get(kind), kind, agent, "PagerDuty", on_change)

    return handle


def _tool_action(
    engine: Engine,
    key: str,
    action: str | None,
    kind: str,
    agent: str,
    via: str,
    on_change: Callable[[], None],
) -> Response:
    """An ack or resolve a paging tool reports for the alert with dedup key ``key``: applied
    here, so escalation stops everywhere. Keys errorgate did not make and other kinds are
    answered 202 (the tool must not retry them) and change nothing."""
    if not key.startswith("errorgate-incident-") or not key.removeprefix("errorgate-incident-").isdigit():
        return Response(202, {"ignored": "not an errorgate incident"})
    if action is None:
        return Response(202, {"ignored": kind})
    incident_id = int(key.removeprefix("errorgate-incident-"))
    if action == "ack":
        engine.acknowledge(incident_id, agent, via=via)
    else:
        engine.resolve(incident_id, agent)
    on_change()
    return Response(200, {"incident": str(incident_id)})


OPSGENIE_TOKEN_HEADER = "x-errorgate-token"
_OPSGENIE_ACTIONS = {"Acknowledge": "ack", "Close": "resolve"}


def opsgenie_webhook(
    engine: Engine, token: str | None, on_change: Callable[[], None]
) -> Callable[[Request], Response]:
    """``POST /api/v1/webhooks/opsgenie``: Opsgenie's outgoing webhook integration (alert
    actions). Opsgenie cannot sign, so the integration sends a shared token as the custom header
    ``X-Errorgate-Token``. ``Acknowledge`` / ``Close`` of an alert whose alias is our dedup key
    acknowledge / resolve the incident here."""

    def handle(req: Request) -> Response:
        if not token:
            return Response(401, {"error": "incidents.escalation.opsgenie.webhook_token_env is not set"})
        given = req.headers.get(OPSGENIE_TOKEN_HEADER, "")
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            engine.audit_denied("opsgenie", "webhook:opsgenie", "-")
            reason = "missing" if not given else "does not match"
            return Response(401, {"error": f"X-Errorgate-Token: {reason}"})
        try:
            doc = json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            return Response(400, {"error": "request body is not JSON"})
        alert = doc.get("alert") if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or not isinstance(doc.get("action"), str):
            return Response(400, {"error": "action: missing; not an Opsgenie webhook payload"})
        if not isinstance(alert, dict) or not isinstance(alert.get("alias"), str):
            return Response(400, {"error": "alert.alias: missing; not an Opsgenie webhook payload"})
        # Opsgenie usernames are e-mail addresses: the timeline keeps the name part only.
        user = str(alert.get("username") or "opsgenie").partition("@")[0]
        agent = re.sub(r"[^A-Za-z0-9_. -]", "", user)[:64] or "opsgenie"
        action = _OPSGENIE_ACTIONS.get(doc["action"])
        return _tool_action(engine, alert["alias"], action, doc["action"][:40], agent, "Opsgenie", on_change)

    return handle
