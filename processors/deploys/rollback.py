"""Automatic rollback: when a service's newest version fails its verdict against the version
before it, call the configured actions once per bad deploy (service, candidate version).

Every ``check_interval`` the newest version of each service is judged (``verdict.judge``) with
the one seen before it as baseline. A ``fail`` is claimed in a ledger before any call
(``errorgate.ha.ledger``: in this process without ``ha:``, else a transaction on etcd fenced
by this instance's leadership; the cooldown is a key under a lease of ``cooldown`` seconds).
Standbys and a deposed leader never call.

The claim comes first, so a call that fails is not repeated by another instance: at most once
(the failure is logged and audited, for a human to finish). A service whose rollback fired
waits ``cooldown`` before another deploy of it can fire. ``dry_run`` claims nothing and calls
nothing: it logs and audits what it would send, once per bad deploy.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from errorgate.component import ComponentContext
from errorgate.ha.election import Election, from_config
from errorgate.ha.ledger import FencedLedger, Ledger, LocalLedger
from errorgate.pipeline.assembly.assembler import get_or_create
from errorgate.processors.deploys import actions
from errorgate.processors.deploys.settings import RollbackConfig, VerdictConfig
from errorgate.processors.deploys.store import VersionStore
from errorgate.processors.deploys.verdict import Verdict, VerdictInputError, judge


class RollbackTrigger:
    def __init__(
        self,
        config: RollbackConfig,
        ledger: Ledger,
        audit: Callable[[Mapping[str, Any]], None],
        logger: logging.Logger | None = None,
        wall: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.audit = audit
        self.log = logger or logging.getLogger("errorgate.rollback")
        self.wall = wall
        self._settled: set[tuple[str, str]] = set()  # deploys this instance need not try again
        self._next_check = 0.0
        self.reports: list[dict[str, Any]] = []  # what fired or would have (dry run), newest last
        self.election: Election | None = None  # set when the ledger is fenced (started with us)
        self._inbox: queue.Queue[tuple[Verdict, str] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        registry = registry if registry is not None else CollectorRegistry()
        # Notes (Grafana, the incident engine) that fail do not stop a rollback: they are counted.
        self.notifications = get_or_create(
            registry,
            "errorgate_rollback_notifications",
            lambda: Counter(
                "errorgate_rollback_notifications",
                "Rollback notes sent to Grafana and the incident engine, by outcome (ok, failed)",
                ["target", "outcome"],
                registry=registry,
            ),
        )

    def start(self) -> None:
        """Calls go out from a thread of their own: the pipeline (which finds the verdicts,
        under its lock) never waits for a CI/CD API."""
        if self.election is not None:
            self.election.start()
        self._thread = threading.Thread(target=self._run, name="errorgate-rollback", daemon=True)
        self._thread.start()

    def submit(self, verdicts: list[Verdict], source: str = "periodic_check") -> None:
        for verdict in verdicts:
            self._inbox.put((verdict, source))

    def asked(self, verdict: Verdict) -> None:
        """A verdict errorgate answered over HTTP: a fail counts as a judged deploy (the same
        checks on the same state as the periodic one; the ledger keeps it once per deploy)."""
        service = verdict.evidence.get("service")
        if (
            verdict.verdict == "fail"
            and self.config.asked_verdicts
            and (not self.config.services or service in self.config.services)
        ):
            self.submit([verdict], "verdict_request")

    def _run(self) -> None:
        while (item := self._inbox.get()) is not None:
            try:
                self.consider(*item)
            except Exception:  # one bad call must not end the role
                self.log.exception("rollback: acting on a failing verdict")

    def stop(self) -> None:
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(5)
        if self.election is not None:
            self.election.stop()

    def due(self, now: float) -> bool:
        if not self.config.enabled or now < self._next_check:
            return False
        self._next_check = now + self.config.check_interval
        return True

    def failing(self, store: VersionStore, verdict: VerdictConfig) -> list[Verdict]:
        """The failing verdicts of each service's newest version against the one before it."""
        found = []
        for service in self.config.services or store.services():
            versions = store.versions(service)
            if len(versions) < 2 or (service, versions[-1]) in self._settled:
                continue
            try:
                result = judge(store, verdict, service, versions[-1], versions[-2], verdict.window)
            except VerdictInputError:
                continue
            if result.verdict == "fail":
                found.append(result)
        return found

    def consider(self, verdict: Verdict, source: str = "periodic_check") -> dict[str, Any] | None:
        """Act on one verdict; the report of what was (or would be) done, or None."""
        if verdict.verdict != "fail":
            return None
        ev = verdict.evidence
        facts = {"service": ev["service"], "candidate": ev["candidate"], "baseline": ev["baseline"]}
        key = (facts["service"], facts["candidate"])
        if key in self._settled:
            return None
        payload = _payload(facts, verdict, self.wall())
        requests = [actions.build(a, facts, payload) for a in self.config.actions]
        if self.config.dry_run:
            self._settled.add(key)
            return self._report(
                "rollback_dry_run", facts, [r.describe() for r in requests], {"source": source}
            )
        claimed, why = self.ledger.claim(
            f"rollback/{key[0]}/{key[1]}",
            facts["baseline"],
            cooldown=(f"rollback/{key[0]}", self.config.cooldown),
        )
        if not claimed:
            if why == "done":
                self._settled.add(key)
            return None
        self._settled.add(key)
        results = [
            actions.send(r, actions.token_for(a)) for r, a in zip(requests, self.config.actions, strict=True)
        ]
        for result in results:
            if not result["ok"]:
                self.log.error("rollback action failed: %s", {k: result[k] for k in ("method", "url")})
        return self._report("rollback", facts, results, {"source": source, **self._notes(facts, verdict)})

    def _notes(self, facts: Mapping[str, str], verdict: Verdict) -> dict[str, Any]:
        """Tell Grafana and the incident engine, once per rollback (the claim came first)."""
        notes: dict[str, Any] = {}
        grafana, engine = self.config.grafana, self.config.incidents
        if grafana is not None:
            text = f"errorgate rollback of {facts['service']} {facts['candidate']} → {facts['baseline']}"
            note = actions.annotation(grafana, text, self.wall())
            notes["annotation"] = actions.send(note, actions._env(grafana.token_env))
            self._count("grafana", notes["annotation"]["ok"])
        if engine is not None:
            reasons = "; ".join(verdict.evidence.get("reasons", [])) or "verdict fail"
            text = f"errorgate rolled back {facts['service']} {facts['candidate']} → {facts['baseline']}: {reasons}"
            sent = actions.send(
                actions.timeline_event(engine, facts["service"], text),
                actions._env(engine.token_env),
                keep_reply=True,
            )
            reply = sent.get("reply")
            noted = reply.get("incidents", []) if sent["ok"] and isinstance(reply, dict) else []
            notes["incidents"] = {k: sent[k] for k in ("ok", "status", "error") if k in sent} | {
                "incidents": noted
            }
            self._count("incidents", sent["ok"])
        return notes

    def _count(self, target: str, ok: bool) -> None:
        self.notifications.labels(target, "ok" if ok else "failed").inc()
        if not ok:
            self.log.error("rollback: the note to %s failed (the rollback went on)", target)

    def _report(
        self,
        event: str,
        facts: Mapping[str, str],
        calls: list[dict[str, Any]],
        notes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        report = {"event": event, **facts, "calls": calls, "at": self.wall(), **(notes or {})}
        self.reports.append(report)
        del self.reports[:-100]
        self.log.warning("%s: %s %s -> %s", event, facts["service"], facts["candidate"], facts["baseline"])
        brief: dict[str, Any] = {"calls": _brief(calls)}
        if "annotation" in report:
            brief["annotation"] = _brief([report["annotation"]])[0]
        self.audit({k: v for k, v in report.items() if k != "calls"} | brief)
        return report


def build_trigger(config: RollbackConfig, context: ComponentContext) -> RollbackTrigger | None:
    """The trigger ``config`` describes (None when disabled): fenced by a leader election on
    etcd when the file has an ``ha:`` section, else acting alone."""
    if not config.enabled:
        return None
    election = from_config(context.ha, "rollback") if context.ha is not None else None
    ledger: Ledger = FencedLedger(election) if election is not None else LocalLedger()
    trigger = RollbackTrigger(
        config, ledger, context.extensions.audit, context.logger, registry=context.telemetry.registry
    )
    trigger.election = election
    return trigger


def _payload(facts: Mapping[str, str], verdict: Verdict, at: float) -> dict[str, Any]:
    return {
        "event": "errorgate.rollback",
        **facts,
        "verdict": verdict.verdict,
        "reasons": verdict.evidence.get("reasons", []),
        "time": at,
    }


def _brief(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the audit log keeps of each call: where, and how it went (no bodies)."""
    return [{k: c[k] for k in ("method", "url", "ok", "status", "error") if k in c} for c in calls]
