"""Alert-fatigue control: while an active incident spans ``incidents.silence.min_services`` or
more services, the minor alerts (``incidents.silence.severities``, P3/P4 by default) of those
services are silenced in Alertmanager through its v2 API; the silences are expired when the
incident resolves. Every silence made or expired is on the incident's timeline.

A silence lasts ``incidents.silence.duration`` and is renewed at half-time, so an engine that
stops leaves nothing silenced for long. Grafana's built-in Alertmanager serves the same API
(``<grafana>/api/alertmanager/grafana``), so one code path covers both."""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from errorgate.config import SilenceConfig
from errorgate.ha.ledger import Ledger
from errorgate.incidents.engine import ACTIVE, Engine, Incident

log = logging.getLogger("errorgate.incidents")
CREATED_BY = "errorgate incidents"
# The marker alert of classify's incidents is not an alert anyone acts on, and dashboards show it.
MARKER_ALERT = "ErrorgateServiceInIncident"


class SilenceError(RuntimeError):
    """Alertmanager refused or could not be reached; the message names incidents.silence."""


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
    """The two calls of the v2 API the engine needs."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base = base_url.rstrip("/")
        self.token = token

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
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
            raise SilenceError(
                f"incidents.silence.alertmanager: {method} {path}: HTTP {e.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            raise SilenceError(f"incidents.silence.alertmanager {self.base}: cannot connect ({e})") from None
        return json.loads(text) if text.strip() else None

    def create(self, body: dict[str, Any]) -> str:
        reply = self._call("POST", "/api/v2/silences", body)
        silence_id = (reply or {}).get("silenceID") if isinstance(reply, dict) else None
        if not silence_id:
            raise SilenceError("incidents.silence.alertmanager: the reply carried no silenceID")
        return str(silence_id)

    def expire(self, silence_id: str) -> None:
        try:
            self._call("DELETE", f"/api/v2/silence/{urllib.parse.quote(silence_id, safe='')}")
        except SilenceError as e:
            # Already expired or gone (expired by hand, Alertmanager's data lost): nothing to undo.
            if "HTTP 404" not in str(e) and "already expired" not in str(e):
                raise


class Silencer:
    """The engine's periodic silence job (``tick``), run by the incident worker.

    On several instances (``ha:``) each create and expire is claimed in ``ledger`` first, so
    only the leader calls Alertmanager, at most once: a create per incident, set of services and
    half-duration slot (the renewal of the next slot is a new claim), an expire per silence. A
    leader that dies between its claim and the store's record leaves at most one silence that
    ends by itself after ``duration``; its successor creates the next one a slot later."""

    def __init__(
        self,
        engine: Engine,
        config: SilenceConfig,
        api: AlertmanagerSilences,
        ledger: Ledger | None = None,
        actor: str = "engine",
    ) -> None:
        self.engine = engine
        self.config = config
        self.api = api
        self.ledger = ledger
        self.actor = actor

    def _claim(self, inc: Incident, action: str, value: str) -> tuple[bool, str]:
        if self.ledger is None:
            return True, ""
        return self.ledger.claim(f"{inc.claim_key}/{action}", value)

    def tick(self) -> None:
        for inc in self.engine.find(statuses=("open", "acknowledged", "resolved", "closed")):
            try:
                self._settle(inc)
            except SilenceError as e:  # Alertmanager down: the next tick tries again
                log.warning("incident %s: %s", inc.id, e)

    def _settle(self, inc: Incident) -> None:
        wanted = self._wanted(inc)
        current = inc.silences[-1] if inc.silences else None
        if wanted is None:
            if inc.silences:
                self._expire_all(inc)
        elif current is None or current["services"] != wanted or self._due(current):
            self._replace(inc, wanted)

    def _wanted(self, inc: Incident) -> list[str] | None:
        """The services whose minor alerts this incident should hold back now, or None."""
        if inc.status not in ACTIVE or len(inc.services) < self.config.min_services:
            return None
        if inc.severity in self.config.severities:
            return None  # the incident is itself minor: silencing its kind would hide the incident
        return sorted(inc.services)

    def _due(self, silence: dict[str, Any]) -> bool:
        return self.engine.clock() >= silence["until"] - self.config.duration / 2

    def _replace(self, inc: Incident, services: list[str]) -> None:
        now = self.engine.clock()
        body = silence_body(services, list(self.config.severities), self.config.duration, str(inc.id),
                            now=datetime.fromtimestamp(now, UTC))  # fmt: skip
        which = hashlib.sha256("|".join(services).encode()).hexdigest()[:16]
        slot = int(now // max(1.0, self.config.duration / 2))
        if not self._claim(inc, f"silence/{which}/{slot}", ",".join(services))[0]:
            return  # not the leader, or made already (then the next slot renews it)
        new_id = self.api.create(body)
        entry = {"id": new_id, "services": services, "severities": list(self.config.severities),
                 "until": now + self.config.duration}  # fmt: skip
        message = (
            f"silenced {'/'.join(self.config.severities)} alerts of {', '.join(services)} "
            f"in Alertmanager (silence {new_id}, until {body['endsAt']})"
        )
        self.engine.record(
            inc.id, "silenced", self.actor, message, silences=json.dumps([*inc.silences, entry])
        )
        self._expire_all(inc)  # the superseded ones

    def _expire_all(self, inc: Incident) -> None:
        for old in inc.silences:
            claimed, why = self._claim(inc, f"unsilence/{old['id']}", "expired")
            if not claimed and why != "done":
                return  # not the leader: it expires them
            if claimed:
                self.api.expire(old["id"])
            remaining = [s for s in self.engine.get(inc.id).silences if s["id"] != old["id"]]
            self.engine.record(inc.id, "silence_expired", self.actor, f"expired silence {old['id']}",
                               silences=json.dumps(remaining))  # fmt: skip
