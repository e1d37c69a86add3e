"""Escalation: an unacknowledged incident pages its team's chain level by level (each level's
``wait`` apart, the chain repeated ``repeat`` times) and stops at the acknowledgement, from the
API or from PagerDuty (v3 webhook). The paging tools then hear the ack and the resolve under the
incident's dedup key, so their own escalation stops too. Every page is on the timeline."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable
from typing import Protocol

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
    ) -> None:
        self.engine = engine
        self.directory = directory
        self.channels = channels
        self.link = link.rstrip("/")
        self.ledger = ledger
        self.actor = actor

    def _claim(self, inc: Incident, action: str, value: str) -> tuple[bool, str]:
        if self.ledger is None:
            return True, ""
        return self.ledger.claim(f"{inc.claim_key}/{action}", value)

    def tick(self) -> None:
        """Page what is due, and tell the tools about acks and resolves."""
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved", "closed")):
            if inc.status == "open" and inc.severity != REVIEW_SEVERITY:
                self._escalate(inc)
            elif inc.status == "acknowledged" and inc.paged == "triggered":
                self._follow_up(inc, "acknowledged")
            elif inc.status in ("resolved", "closed") and inc.paged in ("triggered", "acknowledged"):
                self._follow_up(inc, "resolved")

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
                try:
                    channel.trigger(Page(inc, person, level, f"{self.link}/incidents/{inc.id}"))
                    sent.append(name)
                except DeliveryError as e:
                    failed.append(str(e))
        via = ", ".join(sorted(set(sent))) or "no channel"
        message = f"escalation level {level}: paged {', '.join(people) or 'nobody'} via {via}"
        if failed:
            message += f" (failed: {'; '.join(failed)})"
        self.engine.record(inc.id, "escalated", self.actor, message, escalation_step=step + 1, escalated_at=now,
                           paged="triggered" if sent else inc.paged)  # fmt: skip

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
        if not key.startswith("errorgate-incident-") or not key.removeprefix("errorgate-incident-").isdigit():
            return Response(202, {"ignored": "not an errorgate incident"})
        incident_id = int(key.removeprefix("errorgate-incident-"))
        agent = str((event.get("agent") or {}).get("summary") or "pagerduty")[:64]
        if kind == "incident.acknowledged":
            engine.acknowledge(incident_id, agent, via="PagerDuty")
        elif kind == "incident.resolved":
            engine.resolve(incident_id, agent)
        else:
            return Response(202, {"ignored": kind})
        on_change()
        return Response(200, {"incident": str(incident_id)})

    return handle
