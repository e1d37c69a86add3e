"""The engine's small web page, server-rendered: incidents now (severity, services, age, who was
paged), one incident's timeline with ack/resolve/note forms, and who is on call.

Safety, because the page shows alert labels that anyone able to fire an alert controls, and
because its forms change incidents:
- everything shown is HTML-escaped, and a Content-Security-Policy without scripts stops
  whatever might slip through;
- a change needs the API token, entered once in a form; the cookie then holds an HMAC of the
  token (never the token itself), HttpOnly and SameSite=Strict;
- a POST is accepted only from the page's own origin (``Origin``, else ``Referer``), so a
  forged cross-site form fails even with the cookie; every change is audited as via the API."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from errorgate.incidents.engine import ACTIVE, Incident
from errorgate.incidents.http import Api, Request, Response

SESSION_COOKIE = "errorgate_session"
ACTOR_COOKIE = "errorgate_actor"
_ACTOR = re.compile(r"[^A-Za-z0-9_.@ -]")
_PAGE = re.compile(r"/incidents/(\d+)")
_ACTION = re.compile(r"/incidents/(\d+)/(ack|resolve|note)")
_PAGED = re.compile(r"paged (.+?) via ")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}"
    ".P1{color:#b00;font-weight:bold}.P2{color:#d60}form{display:inline-block;margin:0 1em 1em 0}"
)
OnCallRows = Callable[[datetime], list[dict[str, str | None]]]

e = html.escape


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(ts: float | None) -> str:
    return "–" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page(title: str, body: str) -> Response:
    doc = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{STYLE}</style></head><body><p><a href='/'>incidents</a></p>{body}</body></html>"
    )
    return Response(200, doc, "text/html; charset=utf-8", dict(HEADERS))


class WebPage:
    def __init__(self, api: Api, oncall: OnCallRows | None = None) -> None:
        self.api = api
        self.engine = api.engine
        self.oncall = oncall

    def install(self) -> None:
        self.api.routes[("GET", "/")] = self.index
        self.api.patterns.append(("GET", _PAGE, self.incident))
        self.api.patterns.append(("POST", _ACTION, self.change))

    # ------------------------------------------------------------ sessions

    def _session_value(self) -> str:
        token = self.api.token or ""
        return hmac.new(token.encode(), b"errorgate-incidents-web-session", hashlib.sha256).hexdigest()

    def _has_session(self, req: Request) -> bool:
        cookie = SimpleCookie(req.headers.get("cookie", ""))
        given = cookie[SESSION_COOKIE].value if SESSION_COOKIE in cookie else ""
        return bool(self.api.token) and hmac.compare_digest(given.encode(), self._session_value().encode())

    @staticmethod
    def _same_origin(req: Request) -> bool:
        host = req.headers.get("host", "")
        origin = req.headers.get("origin") or ""
        if origin and origin != "null":
            return origin in (f"http://{host}", f"https://{host}")
        referer = req.headers.get("referer", "")
        return bool(host) and referer.startswith((f"http://{host}/", f"https://{host}/"))

    # ------------------------------------------------------------ pages

    def _paged(self, inc: Incident) -> str:
        escalations = [t for t in self.engine.timeline(inc.id) if t["kind"] == "escalated"]
        found = _PAGED.search(escalations[-1]["message"]) if escalations else None
        return found.group(1) if found else "–"

    def index(self, req: Request) -> Response:
        now = self.engine.clock()
        rows = "".join(
            f"<tr><td><a href='/incidents/{i.id}'>#{i.id}</a></td><td class='{e(i.severity)}'>{e(i.severity)}</td>"
            f"<td>{e(i.status)}</td><td>{e(i.title)}</td><td>{e(', '.join(i.services))}</td>"
            f"<td>{e(i.team)}</td><td>{_age(max(0.0, now - i.opened_at))}</td><td>{e(self._paged(i))}</td></tr>"
            for i in self.engine.find(statuses=ACTIVE)
        )
        table = (
            "<table id='incidents'><tr><th>incident</th><th>severity</th><th>status</th><th>title</th>"
            f"<th>services</th><th>team</th><th>age</th><th>paged</th></tr>{rows}</table>"
            if rows
            else "<p id='incidents'>No open incidents.</p>"
        )
        return _page("errorgate incidents", f"<h1>Incidents now</h1>{table}{self._oncall_table(now)}")

    def _oncall_table(self, now: float) -> str:
        if self.oncall is None:
            return ""
        rows = "".join(
            f"<tr><td>{e(str(r['team']))}</td><td>{e(str(r['primary'] or '–'))}</td>"
            f"<td>{e(str(r['secondary'] or '–'))}</td><td>{e(str(r['until'] or '–'))}</td></tr>"
            for r in self.oncall(datetime.fromtimestamp(now, UTC))
        )
        return (
            "<h2>On call now</h2><table id='oncall'><tr><th>team</th><th>primary</th><th>secondary</th>"
            f"<th>until</th></tr>{rows}</table>"
        )

    def incident(self, req: Request) -> Response:
        match = _PAGE.fullmatch(req.path)
        assert match is not None  # routed by this pattern
        inc = self.engine.get(int(match.group(1)))
        timeline = "".join(
            f"<tr><td>{e(t['at'] or '')}</td><td>{e(t['kind'])}</td><td>{e(t['actor'])}</td>"
            f"<td>{e(t['message'])}</td></tr>"
            for t in self.engine.timeline(inc.id)
        )
        facts = (
            f"<p><span class='{e(inc.severity)}'>{e(inc.severity)}</span> · status <b id='status'>"
            f"{e(inc.status)}</b> · team {e(inc.team)} · services {e(', '.join(inc.services))}</p>"
            f"<p>first error {_when(inc.first_error_at)} · opened {_when(inc.opened_at)} · "
            f"acknowledged {_when(inc.acknowledged_at)} · resolved {_when(inc.resolved_at)}</p>"
        )
        body = (
            f"<h1>Incident #{inc.id}: {e(inc.title)}</h1>{facts}{self._forms(req, inc)}"
            f"<h2>Timeline</h2><table id='timeline'><tr><th>at</th><th>what</th><th>who</th>"
            f"<th>details</th></tr>{timeline}</table>"
        )
        return _page(f"incident {inc.id}", body)

    def _forms(self, req: Request, inc: Incident) -> str:
        cookie = SimpleCookie(req.headers.get("cookie", ""))
        actor = cookie[ACTOR_COOKIE].value if ACTOR_COOKIE in cookie else ""
        login = ""
        if not self._has_session(req):
            login = (
                "<fieldset><legend>Sign in once (kept in a cookie for this browser)</legend>"
                "<label>API token <input type='password' name='token' autocomplete='off' required></label> "
                f"<label>Your name <input name='by' value='{e(_ACTOR.sub('', actor))}' required></label>"
                "</fieldset>"
            )
        forms = []
        for action, label in (("ack", "Acknowledge"), ("resolve", "Resolve")):
            if inc.status in ACTIVE and (action == "resolve" or inc.status == "open"):
                forms.append(
                    f"<form method='post' action='/incidents/{inc.id}/{action}'>{login}"
                    f"<button type='submit' name='do' value='{action}'>{label}</button></form>"
                )
        forms.append(
            f"<form method='post' action='/incidents/{inc.id}/note'>{login}"
            "<label>Note <input name='text' required maxlength='2000'></label> "
            "<button type='submit' name='do' value='note'>Add note</button></form>"
        )
        return "<div id='actions'>" + "".join(forms) + "</div>"

    # ------------------------------------------------------------ changes

    def change(self, req: Request) -> Response:
        match = _ACTION.fullmatch(req.path)
        assert match is not None  # routed by this pattern
        incident_id, action = int(match.group(1)), match.group(2)
        form = {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        cookie = SimpleCookie(req.headers.get("cookie", ""))
        actor = _ACTOR.sub(
            "", form.get("by") or (cookie[ACTOR_COOKIE].value if ACTOR_COOKIE in cookie else "")
        )
        actor = actor[:64] or "web"
        if not self._same_origin(req):
            self.engine.audit_denied(actor, f"web:{action}", str(incident_id), "cross-origin")
            return Response(403, "cross-origin form refused", "text/plain; charset=utf-8")
        given = form.get("token", "")
        by_token = bool(
            self.api.token and given and hmac.compare_digest(given.encode(), self.api.token.encode())
        )
        if not (by_token or self._has_session(req)):
            self.engine.audit_denied(actor, f"web:{action}", str(incident_id))
            return Response(
                401, "a valid API token is required (incidents.token_env)", "text/plain; charset=utf-8"
            )
        self._apply(incident_id, action, actor, form)
        reply = Response(
            303, "", "text/plain; charset=utf-8", dict(HEADERS) | {"Location": f"/incidents/{incident_id}"}
        )
        if by_token:
            attrs = "Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
            reply.cookies = [f"{SESSION_COOKIE}={self._session_value()}; {attrs}",
                             f"{ACTOR_COOKIE}={actor.replace(' ', '_')}; {attrs}"]  # fmt: skip
        return reply

    def _apply(self, incident_id: int, action: str, actor: str, form: dict[str, Any]) -> None:
        if action == "ack":
            self.engine.acknowledge(incident_id, actor, via="web page")
        elif action == "resolve":
            self.engine.resolve(incident_id, actor)
        elif (text := str(form.get("text", "")).strip()[:2000]) != "":
            self.engine.note(incident_id, actor, text)
        self.api.on_change()
