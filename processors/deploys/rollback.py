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

from errorgate.component import ComponentContext
from errorgate.ha.election import Election, from_config
from errorgate.ha.ledger import FencedLedger, Ledger, LocalLedger
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
        self._inbox: queue.Queue[Verdict | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Calls go out from a thread of their own: the pipeline (which finds the verdicts,
        under its lock) never waits for a CI/CD API."""
        if self.election is not None:
            self.election.start()
        self._thread = threading.Thread(target=self._run, name="errorgate-rollback", daemon=True)
        self._thread.start()

    def submit(self, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            self._inbox.put(verdict)

    def _run(self) -> None:
        while (verdict := self._inbox.get()) is not None:
            try:
                self.consider(verdict)
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

    def consider(self, verdict: Verdict) -> dict[str, Any] | None:
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
            return self._report("rollback_dry_run", facts, [r.describe() for r in requests])
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
        report = self._report("rollback", facts, results)
        if self.config.grafana is not None:
            text = f"errorgate rollback of {facts['service']} {facts['candidate']} → {facts['baseline']}"
            note = actions.annotation(self.config.grafana, text, self.wall())
            report["annotation"] = actions.send(note, actions._env(self.config.grafana.token_env))
        return report

    def _report(self, event: str, facts: Mapping[str, str], calls: list[dict[str, Any]]) -> dict[str, Any]:
        report = {"event": event, **facts, "calls": calls, "at": self.wall()}
        self.reports.append(report)
        del self.reports[:-100]
        self.log.warning("%s: %s %s -> %s", event, facts["service"], facts["candidate"], facts["baseline"])
        self.audit({k: v for k, v in report.items() if k != "calls"} | {"calls": _brief(calls)})
        return report


def build_trigger(config: RollbackConfig, context: ComponentContext) -> RollbackTrigger | None:
    """The trigger ``config`` describes (None when disabled): fenced by a leader election on
    etcd when the file has an ``ha:`` section, else acting alone."""
    if not config.enabled:
        return None
    election = from_config(context.ha, "rollback") if context.ha is not None else None
    ledger: Ledger = FencedLedger(election) if election is not None else LocalLedger()
    trigger = RollbackTrigger(config, ledger, context.extensions.audit, context.logger)
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
