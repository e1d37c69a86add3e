"""Incidents from alerts: grouping, the lifecycle (open -> acknowledged -> resolved -> closed),
the timeline and the audit trail. Every change is one transaction in the store, with its
timeline entry and audit row, so what the API shows is what happened."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy.engine import Connection

from errorgate.incidents.store import Store, alerts, audit, incidents, timeline
from errorgate.incidents.webhooks import AlertIn

SEVERITIES = ("P1", "P2", "P3", "P4")
ACTIVE = ("open", "acknowledged")
# Seconds: from a minute to a day, where incident response times live.
BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """A change the incident's state does not allow (HTTP 409); the message says why."""


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Incident:
    id: int
    status: str
    severity: str
    title: str
    team: str
    services: list[str]
    first_error_at: float
    fired_at: float
    opened_at: float
    acknowledged_at: float | None
    resolved_at: float | None
    closed_at: float | None
    escalation_step: int
    escalated_at: float | None
    postmortem_key: str | None
    postmortem_status: str | None
    postmortem_done: bool
    # Alertmanager silences held for this incident: {id, services, severities, until}.
    silences: list[dict[str, Any]] = field(default_factory=list)
    paged: str = ""

    @classmethod
    def from_row(cls, row: Any) -> Incident:
        values = dict(row._mapping)
        values.pop("group_key")
        values["services"] = json.loads(values["services"])
        values["silences"] = json.loads(values["silences"])
        values["postmortem_done"] = bool(values["postmortem_done"])
        return cls(**values)

    @property
    def dedup_key(self) -> str:
        """The same key on every page, update and resolve of this incident, in every tool."""
        return f"errorgate-incident-{self.id}"

    @property
    def claim_key(self) -> str:
        """Where this incident's singleton actions are claimed (``errorgate.ha.ledger``). The
        opening time is part of it: a store started afresh reuses ids, and its incident 1 must
        not find the claims of an earlier incident 1."""
        return f"incidents/{self.id}-{int(self.opened_at)}"

    def to_json(self) -> dict[str, Any]:
        pm = None
        if self.postmortem_key:
            pm = {"key": self.postmortem_key, "status": self.postmortem_status, "done": self.postmortem_done}
        return {
            "id": str(self.id),
            "status": self.status,
            "severity": self.severity,
            "title": self.title,
            "team": self.team,
            "services": self.services,
            "opened_at": rfc3339(self.opened_at),
            "first_error_at": rfc3339(self.first_error_at),
            "fired_at": rfc3339(self.fired_at),
            "acknowledged_at": rfc3339(self.acknowledged_at),
            "resolved_at": rfc3339(self.resolved_at),
            "closed_at": rfc3339(self.closed_at),
            "postmortem": pm,
        }


class IncidentMetrics:
    """MTTD/MTTA/MTTR as histograms on the engine's /metrics (observed at each transition)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("severity", "team")
        self.detect = Histogram(
            "errorgate_incident_time_to_detect_seconds",
            "First error of an incident to its detection (incident opened)",
            labels, registry=registry, buckets=BUCKETS,
        )  # fmt: skip
        self.ack = Histogram(
            "errorgate_incident_time_to_acknowledge_seconds",
            "Incident opened to acknowledged",
            labels, registry=registry, buckets=BUCKETS,
        )  # fmt: skip
        self.resolve = Histogram(
            "errorgate_incident_time_to_resolve_seconds",
            "Incident opened to resolved",
            labels, registry=registry, buckets=BUCKETS,
        )  # fmt: skip


def _worst(a: str, b: str) -> str:
    return min(a, b, key=SEVERITIES.index)


class Engine:
    def __init__(
        self, store: Store, clock: Callable[[], float] = time.time, registry: CollectorRegistry | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = IncidentMetrics(self.registry)
        # SQLite allows one writer; the lock also keeps grouping decisions race-free within this
        # process (Store.write serializes writers across engines sharing one PostgreSQL).
        self.lock = threading.RLock()

    # ------------------------------------------------------------ reading

    def get(self, incident_id: int) -> Incident:
        with self.store.begin() as conn:
            return self._get(conn, incident_id)

    def _get(self, conn: Connection, incident_id: int) -> Incident:
        row = conn.execute(sa.select(incidents).where(incidents.c.id == incident_id)).first()
        if row is None:
            raise NotFound(f"incident {incident_id} does not exist")
        return Incident.from_row(row)

    def find(self, statuses: Iterable[str] | None = None, since: float | None = None) -> list[Incident]:
        query = sa.select(incidents).order_by(incidents.c.id.desc())
        if statuses is not None:
            query = query.where(incidents.c.status.in_(list(statuses)))
        if since is not None:
            query = query.where(incidents.c.opened_at >= since)
        with self.store.begin() as conn:
            return [Incident.from_row(r) for r in conn.execute(query)]

    def timeline(self, incident_id: int) -> list[dict[str, Any]]:
        query = sa.select(timeline).where(timeline.c.incident_id == incident_id).order_by(timeline.c.id)
        with self.store.begin() as conn:
            return [
                {"at": rfc3339(r.at), "kind": r.kind, "actor": r.actor, "message": r.message}
                for r in conn.execute(query)
            ]

    def audit_trail(self) -> list[dict[str, Any]]:
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(audit).order_by(audit.c.id))
            return [{k: v for k, v in r._mapping.items() if k != "id"} for r in rows]

    # ------------------------------------------------------------ writing helpers

    def _note(self, conn: Connection, incident_id: int, kind: str, actor: str, message: str) -> None:
        conn.execute(
            timeline.insert().values(
                incident_id=incident_id, at=self.clock(), kind=kind, actor=actor, message=message
            )
        )

    def _audit(self, conn: Connection, actor: str, action: str, target: str, outcome: str) -> None:
        conn.execute(
            audit.insert().values(at=self.clock(), actor=actor, action=action, target=target, outcome=outcome)
        )

    def audit_denied(self, actor: str, action: str, target: str, outcome: str = "denied") -> None:
        """A refused attempt (bad or missing token, a close the state forbids) is audited too."""
        self.audit_event(actor, action, target, outcome)

    def audit_event(self, actor: str, action: str, target: str, outcome: str) -> None:
        """An audit row in a transaction of its own (refusals, pages given up)."""
        with self.lock, self.store.write() as conn:
            self._audit(conn, actor, action, target, outcome)

    def _update(self, conn: Connection, incident_id: int, **values: Any) -> None:
        conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**values))

    def record(self, incident_id: int, kind: str, actor: str, message: str, **changes: Any) -> None:
        """A timeline entry (and optional column changes) from the engine's own workers."""
        with self.lock, self.store.write() as conn:
            if changes:
                self._update(conn, incident_id, **changes)
            self._note(conn, incident_id, kind, actor, message)

    # ------------------------------------------------------------ alerts

    def ingest(self, batch: list[AlertIn], actor: str, action: str) -> list[int]:
        """Group a webhook's alerts into incidents; returns the incidents touched."""
        touched: list[int] = []
        with self.lock, self.store.write() as conn:
            for alert in batch:
                incident_id = self._incident_for(conn, alert)
                if incident_id is None:
                    continue
                self._upsert_alert(conn, incident_id, alert)
                if incident_id not in touched:
                    touched.append(incident_id)
            for incident_id in touched:
                self._resolve_when_quiet(conn, incident_id)
            self._audit(conn, actor, action, ",".join(map(str, touched)) or "-", "ok")
        return touched

    def _incident_for(self, conn: Connection, alert: AlertIn) -> int | None:
        key = alert.incident_key
        row = conn.execute(
            sa.select(incidents)
            .where(incidents.c.group_key == key, incidents.c.status.in_(ACTIVE))
            .order_by(incidents.c.id.desc())
        ).first()
        severity = alert.labels.get("severity", "P3")
        severity = severity if severity in SEVERITIES else "P3"
        service = alert.labels.get("service", "")
        first_error = min(alert.first_error_at or alert.starts_at, alert.starts_at)
        if row is None:
            if alert.status == "resolved":
                return None  # a resolve for an incident already over (or never seen): nothing to do
            return self._open(conn, key, alert, severity, service, first_error)
        inc = Incident.from_row(row)
        services = sorted(set(inc.services) | ({service} if service else set()))
        worst = _worst(inc.severity, severity) if alert.status == "firing" else inc.severity
        self._update(
            conn,
            inc.id,
            severity=worst,
            services=json.dumps(services),
            first_error_at=min(inc.first_error_at, first_error),
            fired_at=min(inc.fired_at, alert.starts_at),
        )
        if worst != inc.severity:
            self._note(conn, inc.id, "severity", "engine", f"severity raised from {inc.severity} to {worst}")
        return inc.id

    def _open(
        self, conn: Connection, key: str, alert: AlertIn, severity: str, service: str, first_error: float
    ) -> int:
        now = self.clock()
        alertname = alert.labels.get("alertname", "alert")
        team = alert.labels.get("team", "unowned")
        result = conn.execute(
            incidents.insert().values(
                group_key=key, status="open", severity=severity, team=team,
                title=f"{alertname} on {service}" if service else alertname,
                services=json.dumps([service] if service else []),
                first_error_at=first_error, fired_at=alert.starts_at, opened_at=now,
                escalation_step=0, postmortem_done=False, silences="[]", paged="",
            )
        )  # fmt: skip
        inserted = result.inserted_primary_key
        assert inserted is not None  # an INSERT of one row always has its key
        incident_id = int(inserted[0])
        self._note(conn, incident_id, "opened", "engine", f"{severity} incident opened by {alertname}")
        self.metrics.detect.labels(severity, team).observe(max(0.0, now - first_error))
        return incident_id

    def _upsert_alert(self, conn: Connection, incident_id: int, alert: AlertIn) -> None:
        where = (alerts.c.incident_id == incident_id) & (alerts.c.fingerprint == alert.fingerprint)
        row = conn.execute(sa.select(alerts).where(where)).first()
        name = alert.labels.get("alertname", "alert")
        service = alert.labels.get("service", "")
        if row is None:
            conn.execute(
                alerts.insert().values(
                    incident_id=incident_id, fingerprint=alert.fingerprint, alertname=name,
                    status=alert.status, labels=json.dumps(alert.labels, sort_keys=True),
                    starts_at=alert.starts_at, ends_at=alert.ends_at,
                )
            )  # fmt: skip
        elif row.status != alert.status:
            conn.execute(alerts.update().where(where).values(status=alert.status, ends_at=alert.ends_at))
        else:
            return  # Alertmanager repeats notifications; the timeline keeps only changes
        self._note(
            conn, incident_id, f"alert_{alert.status}", "alertmanager", f"{name} {alert.status} ({service})"
        )

    def _resolve_when_quiet(self, conn: Connection, incident_id: int) -> None:
        inc = self._get(conn, incident_id)
        # Alerts this incident's own silences hold back never send their resolve: they do not
        # keep it open (the silence ends with the incident, and Alertmanager re-notifies then).
        muted = {(svc, sev) for s in inc.silences for svc in s["services"] for sev in s["severities"]}
        query = sa.select(alerts.c.labels).where(
            alerts.c.incident_id == incident_id, alerts.c.status == "firing"
        )
        firing = [json.loads(r.labels) for r in conn.execute(query)]
        held = [(labels.get("service"), labels.get("severity")) not in muted for labels in firing]
        if not any(held) and inc.status in ACTIVE:
            self._set_resolved(conn, inc, "engine", "all alerts resolved")

    def _set_resolved(self, conn: Connection, inc: Incident, actor: str, message: str) -> None:
        now = self.clock()
        self._update(conn, inc.id, status="resolved", resolved_at=now)
        self._note(conn, inc.id, "resolved", actor, message)
        self.metrics.resolve.labels(inc.severity, inc.team).observe(max(0.0, now - inc.opened_at))

    # ------------------------------------------------------------ people

    def acknowledge(self, incident_id: int, actor: str, via: str = "api") -> Incident:
        with self.lock, self.store.write() as conn:
            inc = self._get(conn, incident_id)
            if inc.status != "open":
                self._audit(conn, actor, "ack", str(incident_id), "no-op")
                return inc
            now = self.clock()
            self._update(conn, incident_id, status="acknowledged", acknowledged_at=now)
            self._note(
                conn, incident_id, "acknowledged", actor, f"acknowledged via {via}; escalation stopped"
            )
            self._audit(conn, actor, "ack", str(incident_id), "ok")
            self.metrics.ack.labels(inc.severity, inc.team).observe(max(0.0, now - inc.opened_at))
            return self._get(conn, incident_id)

    def resolve(self, incident_id: int, actor: str) -> Incident:
        with self.lock, self.store.write() as conn:
            inc = self._get(conn, incident_id)
            if inc.status in ACTIVE:
                if inc.acknowledged_at is None:
                    # Resolving is also a response: it counts as the acknowledgement.
                    self._update(conn, incident_id, acknowledged_at=self.clock())
                    self.metrics.ack.labels(inc.severity, inc.team).observe(
                        max(0.0, self.clock() - inc.opened_at)
                    )
                self._set_resolved(conn, inc, actor, "resolved by hand")
            self._audit(conn, actor, "resolve", str(incident_id), "ok" if inc.status in ACTIVE else "no-op")
            return self._get(conn, incident_id)

    def close(self, incident_id: int, actor: str) -> Incident:
        with self.lock, self.store.write() as conn:
            inc = self._get(conn, incident_id)
            reason = self._close_refusal(inc)
            if not reason:
                self._update(conn, incident_id, status="closed", closed_at=self.clock())
                self._note(conn, incident_id, "closed", actor, "incident closed")
                self._audit(conn, actor, "close", str(incident_id), "ok")
                return self._get(conn, incident_id)
        # Audited in a transaction of its own: raising inside the first would roll it back.
        self.audit_denied(actor, "close", str(incident_id), outcome="refused")
        raise Conflict(reason)

    @staticmethod
    def _close_refusal(inc: Incident) -> str | None:
        if inc.status == "closed":
            return None
        if inc.status != "resolved":
            return f"incident {inc.id} is {inc.status}: resolve it before closing"
        if inc.severity == "P1" and not inc.postmortem_done:
            if not inc.postmortem_key:
                return f"incident {inc.id} is P1: its postmortem has not been filed yet"
            return (
                f"incident {inc.id} is P1: postmortem {inc.postmortem_key} is not done "
                f"(status {inc.postmortem_status})"
            )
        return None

    def note(self, incident_id: int, actor: str, text: str) -> None:
        with self.lock, self.store.write() as conn:
            self._get(conn, incident_id)
            self._note(conn, incident_id, "note", actor, text)
            self._audit(conn, actor, "note", str(incident_id), "ok")

    def note_service(self, service: str, kind: str, actor: str, text: str) -> list[int]:
        """Put an event (a rollback, a deploy) on the timeline of every incident of ``service``
        still open or acknowledged; the ids noted (none open: nothing to do, not an error)."""
        with self.lock, self.store.begin() as conn:
            rows = conn.execute(sa.select(incidents).where(incidents.c.status.in_(["open", "acknowledged"])))
            noted = [inc.id for inc in map(Incident.from_row, rows) if service in inc.services]
            for incident_id in noted:
                self._note(conn, incident_id, kind, actor, text)
                self._audit(conn, actor, kind, str(incident_id), "ok")
        return noted
