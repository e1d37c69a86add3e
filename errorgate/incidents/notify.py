"""Paging channels: PagerDuty Events API v2, Opsgenie Alert API, Slack incoming webhooks.

Each uses the incident's stable dedup key (``errorgate-incident-<id>``): PagerDuty's
``dedup_key``, Opsgenie's ``alias``, and the key in the Slack text, so a re-page updates the
same alert and the acknowledge/resolve that follow reach it. Secrets come from environment
variables named in the config and never appear in logs or on the timeline."""

from __future__ import annotations

import json
import os
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from errorgate.config import (
    EscalationDeliveryConfig,
    OpsgenieConfig,
    PagerDutyConfig,
    SlackConfig,
    SmtpConfig,
)
from errorgate.incidents.engine import Incident

PAGERDUTY_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}


class DeliveryError(Exception):
    """A channel refused or could not be reached; the message names the channel, never a secret."""


@dataclass
class Page:
    incident: Incident
    person: str
    level: int
    link: str


class Channel(Protocol):
    name: str

    def trigger(self, page: Page) -> None: ...

    def acknowledge(self, incident: Incident) -> None: ...

    def resolve(self, incident: Incident) -> None: ...


def _post(channel: str, url: str, body: Any, headers: dict[str, str] | None = None) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        raise DeliveryError(f"{channel}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DeliveryError(f"{channel}: cannot connect ({type(e).__name__})") from None


def _secret(env: str, key: str) -> str:
    value = os.environ.get(env, "")
    if not value:
        raise DeliveryError(f"{key}: environment variable {env} is not set")
    return value


class PagerDuty:
    name = "pagerduty"

    def __init__(self, cfg: PagerDutyConfig) -> None:
        self.url = cfg.url
        self.key = _secret(cfg.routing_key_env, "incidents.escalation.pagerduty.routing_key_env")

    def _event(self, incident: Incident, action: str) -> dict[str, Any]:
        return {"routing_key": self.key, "event_action": action, "dedup_key": incident.dedup_key}

    def trigger(self, page: Page) -> None:
        inc = page.incident
        body = self._event(inc, "trigger")
        body["payload"] = {
            "summary": f"[{inc.severity}] {inc.title}"[:1024],
            "source": ",".join(inc.services) or "errorgate",
            "severity": PAGERDUTY_SEVERITY.get(inc.severity, "warning"),
            "group": inc.team,
            "class": "errorgate-incident",
            "custom_details": {
                "incident": str(inc.id),
                "on_call": page.person,
                "escalation_level": page.level,
            },
        }
        body["client"] = "errorgate"
        body["client_url"] = page.link
        _post(self.name, self.url, body)

    def acknowledge(self, incident: Incident) -> None:
        _post(self.name, self.url, self._event(incident, "acknowledge"))

    def resolve(self, incident: Incident) -> None:
        _post(self.name, self.url, self._event(incident, "resolve"))


class Opsgenie:
    name = "opsgenie"

    def __init__(self, cfg: OpsgenieConfig) -> None:
        self.base = cfg.url.rstrip("/")
        self.headers = {
            "Authorization": "GenieKey "
            + _secret(cfg.api_key_env, "incidents.escalation.opsgenie.api_key_env")
        }

    def trigger(self, page: Page) -> None:
        inc = page.incident
        body = {
            "message": f"[{inc.severity}] {inc.title}"[:130],
            "alias": inc.dedup_key,
            "description": f"errorgate incident {inc.id}: {page.link}",
            "responders": [{"type": "team", "name": inc.team}],
            "tags": ["errorgate", inc.severity, *inc.services][:20],
            "details": {"on_call": page.person, "escalation_level": str(page.level), "incident": str(inc.id)},
            "entity": ",".join(inc.services)[:512],
            "source": "errorgate",
            "priority": inc.severity if inc.severity in ("P1", "P2", "P3", "P4") else "P3",
        }
        _post(self.name, f"{self.base}/v2/alerts", body, self.headers)

    def _action(self, incident: Incident, action: str) -> None:
        alias = urllib.parse.quote(incident.dedup_key, safe="")
        url = f"{self.base}/v2/alerts/{alias}/{action}?identifierType=alias"
        _post(self.name, url, {"source": "errorgate", "note": f"{action} in errorgate"}, self.headers)

    def acknowledge(self, incident: Incident) -> None:
        self._action(incident, "acknowledge")

    def resolve(self, incident: Incident) -> None:
        self._action(incident, "close")


class Slack:
    name = "slack"

    def __init__(self, cfg: SlackConfig) -> None:
        self.url = _secret(cfg.webhook_url_env, "incidents.escalation.slack.webhook_url_env")

    def _say(self, incident: Incident, text: str) -> None:
        _post(self.name, self.url, {"text": f"{text} [{incident.dedup_key}]"})

    def trigger(self, page: Page) -> None:
        inc = page.incident
        self._say(
            inc,
            f":rotating_light: {inc.severity} {inc.title}: paging {page.person} (level {page.level}) {page.link}",
        )

    def acknowledge(self, incident: Incident) -> None:
        self._say(incident, f"acknowledged: {incident.title}")

    def resolve(self, incident: Incident) -> None:
        self._say(incident, f":white_check_mark: resolved: {incident.title}")


def channels(cfg: EscalationDeliveryConfig) -> dict[str, Channel]:
    """The configured channels, by name; a missing secret is an error naming its key (at start)."""
    out: dict[str, Channel] = {}
    if cfg.pagerduty:
        out["pagerduty"] = PagerDuty(cfg.pagerduty)
    if cfg.opsgenie:
        out["opsgenie"] = Opsgenie(cfg.opsgenie)
    if cfg.slack:
        out["slack"] = Slack(cfg.slack)
    if cfg.smtp:
        out["email"] = Email(cfg.smtp)
    return out


class Email:
    """Pages by SMTP. The Message-ID is derived from the dedup key, the state and the level, so a
    re-sent page is the same message to a mail system that deduplicates; acknowledge/resolve
    thread under the first page (``In-Reply-To``); the subject and ``X-Errorgate-Dedup-Key``
    carry ``errorgate-incident-<id>`` for filters."""

    name = "email"

    def __init__(self, cfg: SmtpConfig) -> None:
        self.cfg = cfg
        self.login: tuple[str, str] | None = None
        if cfg.username_env and cfg.password_env:
            self.login = (
                _secret(cfg.username_env, "incidents.escalation.smtp.username_env"),
                _secret(cfg.password_env, "incidents.escalation.smtp.password_env"),
            )
        self.people: dict[int, str] = {}  # incident -> last paged address, for the follow-ups

    def _domain(self) -> str:
        return self.cfg.from_addr.rpartition("@")[2] or "errorgate"

    def _send(self, incident: Incident, to: str, state: str, body: str, level: int = 1) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"] = self.cfg.from_addr, to
        msg["Subject"] = f"[{incident.dedup_key}] {state}: {incident.severity} {incident.title}"
        first = f"<{incident.dedup_key}.triggered.1@{self._domain()}>"
        suffix = f".{level}" if state == "triggered" else ""
        msg["Message-ID"] = f"<{incident.dedup_key}.{state}{suffix}@{self._domain()}>"
        if msg["Message-ID"] != first:
            msg["In-Reply-To"] = msg["References"] = first
        msg["X-Errorgate-Dedup-Key"] = incident.dedup_key
        msg.set_content(body)
        try:
            with smtplib.SMTP(self.cfg.host, self.cfg.port, timeout=10) as smtp:
                if self.cfg.starttls:
                    smtp.starttls()
                if self.login:
                    smtp.login(*self.login)
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as e:
            raise DeliveryError(f"email: {type(e).__name__}") from None

    def trigger(self, page: Page) -> None:
        inc = page.incident
        to = self.cfg.to.format(person=page.person)
        self.people[inc.id] = to
        body = f"{inc.severity} incident {inc.id}: {inc.title}\nservices: {', '.join(inc.services)}\n"
        self._send(inc, to, "triggered", body + f"escalation level {page.level}\n{page.link}\n", page.level)

    def acknowledge(self, incident: Incident) -> None:
        if incident.id in self.people:
            self._send(
                incident, self.people[incident.id], "acknowledged", f"incident {incident.id} acknowledged\n"
            )

    def resolve(self, incident: Incident) -> None:
        if incident.id in self.people:
            self._send(
                incident, self.people.pop(incident.id), "resolved", f"incident {incident.id} resolved\n"
            )
