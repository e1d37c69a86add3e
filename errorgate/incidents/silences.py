"""Alert-fatigue control: while an active incident spans ``incidents.silence.min_services`` or
more services, the minor alerts (``incidents.silence.severities``, P3/P4 by default) of those
services are silenced through the Alertmanager v2 API, in Alertmanager
(``incidents.silence.alertmanager``) and/or Grafana's built-in Alertmanager
(``incidents.silence.grafana``, which serves the same API under ``/api/alertmanager/grafana``,
so one client covers both); the silences are expired when the incident resolves. Every silence
made or expired, and every target that failed, is on the incident's timeline naming the target.

A silence lasts ``incidents.silence.duration`` and is renewed at half-time, so an engine that
stops leaves nothing silenced for long. Each target is settled on its own: one being down does
not stop the other (the failure is counted in ``errorgate_incident_silence_failures_total``)."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from errorgate.config import SilenceConfig
from errorgate.ha.ledger import Ledger
from errorgate.incidents.engine import ACTIVE, Engine, Incident

log = logging.getLogger("errorgate.incidents")
CREATED_BY = "errorgate incidents"
# The marker alert of classify's incidents is not an alert anyone acts on, and dashboards show it.
MARKER_ALERT = "ErrorgateServiceInIncident"


class SilenceError(RuntimeError):
    """A target refused or could not be reached; the message names its incidents.silence key."""


def silence_body(
    services: list[str],
    severities: list[str],
    duration_s: float,
    incident: str | None,
    now: datetime | None = None,
    created_by: str = CREATED_BY,
) -> dict[str, Any]:
    """An Alertmanager v2 silence of ``severities`` alerts of ``services`` (the inhibition
    rule's effect, see alert_rules/alertmanager.yml)."""
    start = now or datetime.now(UTC)
    matchers = [
        {"name": "service", "value": "|".join(services), "isRegex": len(services) > 1, "isEqual": True},
        {"name": "severity", "value": "|".join(severities), "isRegex": len(severities) > 1, "isEqual": True},
        {"name": "alertname", "value": MARKER_ALERT, "isRegex": False, "isEqual": False},
    ]
    comment = "minor alerts held back during a multi-service incident"
    if incident:
        comment += f" (incident {incident})"
    return {
        "matchers": matchers,
        "startsAt": start.isoformat().replace("+00:00", "Z"),
        "endsAt": (start + timedelta(seconds=duration_s)).isoformat().replace("+00:00", "Z"),
        "createdBy": created_by,
        "comment": comment,
    }


class AlertmanagerSilences:
    """The two calls of the Alertmanager v2 API the engine needs, on one target."""

    target = "alertmanager"  # in the silence entries, claims and the failure counter
    display = "Alertmanager"  # on the timeline
    key = "incidents.silence.alertmanager"  # named in errors
    prefix = ""  # where the v2 API is below the base URL

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base = base_url.rstrip("/")
        self.token = token

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + self.prefix + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                text = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace").strip()[:200]
            raise SilenceError(f"{self.key}: {method} {self.prefix}{path}: HTTP {e.code} {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise SilenceError(f"{self.key} {self.base}: cannot connect ({e})") from None
        return json.loads(text) if text.strip() else None

    def create(self, body: dict[str, Any]) -> str:
        reply = self._call("POST", "/api/v2/silences", body)
        silence_id = (reply or {}).get("silenceID") if isinstance(reply, dict) else None
        if not silence_id:
            raise SilenceError(f"{self.key}: the reply carried no silenceID")
        return str(silence_id)

    def expire(self, silence_id: str) -> None:
        try:
            self._call("DELETE", f"/api/v2/silence/{urllib.parse.quote(silence_id, safe='')}")
        except SilenceError as e:
            # Already expired or gone (expired by hand, Alertmanager's data lost): nothing to undo.
            if "HTTP 404" not in str(e) and "already expired" not in str(e):
                raise


class GrafanaSilences(AlertmanagerSilences):
    """Grafana's built-in Alertmanager (``POST /api/alertmanager/grafana/api/v2/silences``,
    ``DELETE .../silence/{id}``, a service-account token as Bearer): the same API, another place."""

    target = "grafana"
    display = "Grafana"
    key = "incidents.silence.grafana"
    prefix = "/api/alertmanager/grafana"


_FAILURES: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _failure_counter(registry: CollectorRegistry) -> Counter:
    """One counter per engine registry, however many silencers a process builds on it."""
    if registry not in _FAILURES:
        _FAILURES[registry] = Counter(
            "errorgate_incident_silence_failures_total",
            "Silence creates and expires that failed (target refused or out of reach), by target",
            ("target",), registry=registry,
        )  # fmt: skip
    return _FAILURES[registry]


class Silencer:
    """The engine's periodic silence job (``tick``), run by the incident worker, over each
    target (Alertmanager, Grafana) on its own: a silence entry names its target.

    On several instances (``ha:``) each create and expire is claimed in ``ledger`` first, so
    only the leader calls a target, at most once: a create per incident, target, set of services
    and half-duration slot (the renewal of the next slot is a new claim), an expire per silence.
    A leader that dies between its claim and the store's record, or whose call fails after the
    claim, leaves at most one silence that ends by itself after ``duration``; the next slot's
    claim tries again."""

    def __init__(
        self,
        engine: Engine,
        config: SilenceConfig,
        api: AlertmanagerSilences | Sequence[AlertmanagerSilences],
        ledger: Ledger | None = None,
        actor: str = "engine",
    ) -> None:
        self.engine = engine
        self.config = config
        self.targets = [api] if isinstance(api, AlertmanagerSilences) else list(api)
        self.ledger = ledger
        self.actor = actor
        self.failures = _failure_counter(engine.registry)
        # (incident, target) whose last call failed: the timeline says so once per outage.
        self.failing: set[tuple[int, str]] = set()

    def _claim(self, inc: Incident, api: AlertmanagerSilences, action: str, value: str) -> tuple[bool, str]:
        if self.ledger is None:
            return True, ""
        # Alertmanager's claims keep their names from before Grafana was a target.
        name = action if api.target == "alertmanager" else f"{api.target}/{action}"
        return self.ledger.claim(f"{inc.claim_key}/{name}", value)

    def tick(self) -> None:
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved", "closed")):
            for api in self.targets:
                try:
                    self._settle(self.engine.get(inc.id), api)
                except SilenceError as e:  # this target down: the others go on, the next tick retries
                    self._failed(inc, api, e)
                else:
                    self.failing.discard((inc.id, api.target))

    def _failed(self, inc: Incident, api: AlertmanagerSilences, error: SilenceError) -> None:
        self.failures.labels(api.target).inc()
        log.warning("incident %s: %s", inc.id, error)
        if (inc.id, api.target) not in self.failing:
            self.failing.add((inc.id, api.target))
            self.engine.record(inc.id, "silence_failed", self.actor, f"{api.display}: {error}")

    @staticmethod
    def _of(inc: Incident, api: AlertmanagerSilences) -> list[dict[str, Any]]:
        return [s for s in inc.silences if s.get("target", "alertmanager") == api.target]

    def _settle(self, inc: Incident, api: AlertmanagerSilences) -> None:
        wanted = self._wanted(inc)
        mine = self._of(inc, api)
        current = mine[-1] if mine else None
        if wanted is None:
            if mine:
                self._expire_all(inc, api, mine)
        elif current is None or current["services"] != wanted or self._due(current):
            self._replace(inc, api, wanted, mine)

    def _wanted(self, inc: Incident) -> list[str] | None:
        """The services whose minor alerts this incident should hold back now, or None."""
        if inc.status not in ACTIVE or len(inc.services) < self.config.min_services:
            return None
        if inc.severity in self.config.severities:
            return None  # the incident is itself minor: silencing its kind would hide the incident
        return sorted(inc.services)

    def _due(self, silence: dict[str, Any]) -> bool:
        return self.engine.clock() >= silence["until"] - self.config.duration / 2

    def _replace(
        self, inc: Incident, api: AlertmanagerSilences, services: list[str], old: list[dict[str, Any]]
    ) -> None:
        now = self.engine.clock()
        body = silence_body(services, list(self.config.severities), self.config.duration, str(inc.id),
                            now=datetime.fromtimestamp(now, UTC))  # fmt: skip
        which = hashlib.sha256("|".join(services).encode()).hexdigest()[:16]
        slot = int(now // max(1.0, self.config.duration / 2))
        if not self._claim(inc, api, f"silence/{which}/{slot}", ",".join(services))[0]:
            return  # not the leader, or made already (then the next slot renews it)
        new_id = api.create(body)
        entry = {"id": new_id, "target": api.target, "services": services,
                 "severities": list(self.config.severities), "until": now + self.config.duration}  # fmt: skip
        message = (
            f"silenced {'/'.join(self.config.severities)} alerts of {', '.join(services)} "
            f"in {api.display} (silence {new_id}, until {body['endsAt']})"
        )
        silences = [*self.engine.get(inc.id).silences, entry]
        self.engine.record(inc.id, "silenced", self.actor, message, silences=json.dumps(silences))
        self._expire_all(inc, api, old)  # the superseded ones

    def _expire_all(self, inc: Incident, api: AlertmanagerSilences, old: list[dict[str, Any]]) -> None:
        for silence in old:
            claimed, why = self._claim(inc, api, f"unsilence/{silence['id']}", "expired")
            if not claimed and why != "done":
                return  # not the leader: it expires them
            if claimed:
                api.expire(silence["id"])
            remaining = [
                s for s in self.engine.get(inc.id).silences
                if (s.get("target", "alertmanager"), s["id"]) != (api.target, silence["id"])
            ]  # fmt: skip
            self.engine.record(inc.id, "silence_expired", self.actor,
                               f"expired {api.display} silence {silence['id']}",
                               silences=json.dumps(remaining))  # fmt: skip
