"""The engine's HTTP API (stdlib server: a handful of JSON routes need no framework).

Reads are open on the listener; every state change needs ``Authorization: Bearer <token>``
(the token from the environment variable ``incidents.token_env``), is audited, and lands on
the incident's timeline. A store that cannot be reached answers 503 + Retry-After, so
Alertmanager keeps the notification and retries."""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from errorgate.incidents.engine import Conflict, Engine, NotFound
from errorgate.incidents.store import UNAVAILABLE
from errorgate.incidents.webhooks import WebhookError, parse_alerts

log = logging.getLogger("errorgate.incidents")
MAX_BODY = 4 * 1024 * 1024
# Kinds of timeline event other tools may put on a service's incidents (errorgate's rollback
# trigger, a CI/CD pipeline): not "opened", "resolved" and the like, which the engine owns.
SERVICE_EVENT_KINDS = ("rollback", "deploy", "note")
_ACTOR = re.compile(r"[^A-Za-z0-9_.@ -]")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    actor: str = "anonymous"


@dataclass
class Response:
    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # one Set-Cookie header each


Route = Callable[[Request], Response]


class Api:
    """Routing and authorization; the engine does the work."""

    def __init__(self, engine: Engine, token: str | None, token_env: str) -> None:
        self.engine = engine
        self.token = token
        self.token_env = token_env
        # Extra routes (PagerDuty webhook, web page, report) by (method, path).
        self.routes: dict[tuple[str, str], Route] = {}
        # Routes with an id in the path (the web page's incident pages), by (method, regex).
        self.patterns: list[tuple[str, re.Pattern[str], Route]] = []
        self.on_change: Callable[[], None] = lambda: None

    def authorize(self, req: Request, action: str, target: str) -> Response | None:
        """None when the bearer token is right; else the 401 to send (and an audit row)."""
        if not self.token:
            return Response(
                401, {"error": f"incidents.token_env: {self.token_env} is not set; changes are refused"}
            )
        given = req.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), self.token.encode())):
            self.engine.audit_denied(req.actor, action, target)
            return Response(401, {"error": "Authorization: a valid Bearer token is required"})
        return None

    def handle(self, req: Request) -> Response:
        try:
            return self._dispatch(req)
        except NotFound as e:
            return Response(404, {"error": str(e)})
        except Conflict as e:
            return Response(409, {"error": str(e)})
        except UNAVAILABLE as e:
            log.error("incident store unavailable: %s", type(e).__name__)
            return Response(503, {"error": "incident store unavailable; retry"}, headers={"Retry-After": "5"})

    def _dispatch(self, req: Request) -> Response:
        route = self.routes.get((req.method, req.path))
        if route is not None:
            return route(req)
        for method, pattern, handler in self.patterns:
            if method == req.method and pattern.fullmatch(req.path):
                return handler(req)
        if req.method == "GET" and req.path == "/metrics":
            return Response(200, generate_latest(self.engine.registry), CONTENT_TYPE_LATEST)
        if req.method == "GET" and req.path == "/healthz":
            return Response(200, {"status": "ok"})
        if req.method == "GET" and req.path == "/api/v1/incidents":
            statuses = req.query["status"].split(",") if req.query.get("status") else None
            return Response(200, {"incidents": [i.to_json() for i in self.engine.find(statuses)]})
        m = re.fullmatch(r"/api/v1/incidents/(\d+)(?:/(ack|resolve|close|note))?", req.path)
        if m and req.method == "GET" and m.group(2) is None:
            incident_id = int(m.group(1))
            doc = self.engine.get(incident_id).to_json()
            doc["timeline"] = self.engine.timeline(incident_id)
            return Response(200, doc)
        if m and req.method == "POST" and m.group(2):
            return self._change(req, int(m.group(1)), m.group(2))
        m = re.fullmatch(r"/api/v1/services/([^/]+)/events", req.path)
        if m and req.method == "POST":
            return self._service_event(req, unquote(m.group(1)))
        m = re.fullmatch(r"/api/v1/alerts/(alertmanager|grafana)", req.path)
        if m and req.method == "POST":
            return self._alerts(req, "alertmanager" if m.group(1) == "alertmanager" else "grafana")
        return Response(404, {"error": f"{req.method} {req.path}: no such route"})

    def _change(self, req: Request, incident_id: int, action: str) -> Response:
        denied = self.authorize(req, action, str(incident_id))
        if denied:
            return denied
        if action == "ack":
            inc = self.engine.acknowledge(incident_id, req.actor)
        elif action == "resolve":
            inc = self.engine.resolve(incident_id, req.actor)
        elif action == "close":
            inc = self.engine.close(incident_id, req.actor)
        else:
            text = _json_field(req.body, "text")
            if not text:
                return Response(400, {"error": "text: a note needs a non-empty text"})
            self.engine.note(incident_id, req.actor, text)
            inc = self.engine.get(incident_id)
        self.on_change()
        return Response(200, inc.to_json())

    def _service_event(self, req: Request, service: str) -> Response:
        """``POST /api/v1/services/{name}/events`` ``{"kind", "text"}``: on the timeline of each
        open or acknowledged incident of the service; 200 ``{"incidents": [ids]}``."""
        kind = _json_field(req.body, "kind") or "note"
        denied = self.authorize(req, kind, f"service:{service}")
        if denied:
            return denied
        if kind not in SERVICE_EVENT_KINDS:
            return Response(
                400, {"error": f"kind: {kind[:40]!r} is not one of {', '.join(SERVICE_EVENT_KINDS)}"}
            )
        text = _json_field(req.body, "text")
        if not text:
            return Response(400, {"error": "text: an event needs a non-empty text"})
        noted = self.engine.note_service(service, kind, req.actor, text[:2000])
        if noted:
            self.on_change()
        return Response(200, {"incidents": [str(i) for i in noted]})

    def _alerts(self, req: Request, source: Literal["alertmanager", "grafana"]) -> Response:
        req.actor = source
        denied = self.authorize(req, f"webhook:{source}", "-")
        if denied:
            return denied
        try:
            batch = parse_alerts(req.body, source)
        except WebhookError as e:
            return Response(400, {"error": str(e)})
        touched = self.engine.ingest(batch, source, f"webhook:{source}")
        self.on_change()
        return Response(200, {"incidents": [str(i) for i in touched]})


def _json_field(body: bytes, key: str) -> str:
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return ""
    value = doc.get(key) if isinstance(doc, dict) else None
    return value.strip() if isinstance(value, str) else ""


def _actor(headers: dict[str, str], body: bytes) -> str:
    """Who acts (``X-Errorgate-Actor`` or the body's ``by``), reduced to a short safe name."""
    name = headers.get("x-errorgate-actor") or _json_field(body, "by") or "api"
    return _ACTOR.sub("", name)[:64] or "api"


class _Handler(BaseHTTPRequestHandler):
    api: Api
    server_version = "errorgate-incidents"

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(Response(413, {"error": f"request body over {MAX_BODY} bytes"}))
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        req = Request(method, parts.path.rstrip("/") or "/", query, headers, body, _actor(headers, body))
        self._send(self.api.handle(req))

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _send(self, resp: Response) -> None:
        if isinstance(resp.body, bytes):
            payload = resp.body
        elif isinstance(resp.body, str):
            payload = resp.body.encode()
        else:
            payload = json.dumps(resp.body).encode()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        for cookie in resp.cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Method and path only, never the query: a Jira Data Center webhook carries its secret
        # there (?token=). Debug level: keep the log quiet per request.
        log.debug("%s %s %s", self.address_string(), self.command, urlsplit(self.path).path)


class HttpServer:
    def __init__(self, api: Api, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        handler = type("Handler", (_Handler,), {"api": api})
        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="incidents-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
