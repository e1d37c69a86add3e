"""A local HTTP server that speaks the PagerDuty Events v2 and Opsgenie alert APIs (plus Slack
and generic webhooks) and records every request, for end-to-end tests of alert delivery.

Endpoints (all POST):
- ``/v2/enqueue``: PagerDuty Events v2 -> 202 ``{"status": "success", "dedup_key": ...}``
- ``/v2/alerts``: Opsgenie create -> 202 ``{"result": "Request will be processed", ...}``
- ``/v2/alerts/<identifier>/close``: Opsgenie close -> 202
- ``/slack/...`` and ``/webhook/...``: 200 ``ok``

``fail_first={"pagerduty": 2}`` makes the first two requests of that kind fail with 503 (recorded
like the others), to test the sender's retries.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Captured:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when not JSON
    raw: str

    @property
    def kind(self) -> str:
        if self.path == "/v2/enqueue":
            return "pagerduty"
        if self.path == "/v2/alerts":
            return "opsgenie"
        if self.path.startswith("/v2/alerts/") and self.path.endswith("/close"):
            return "opsgenie_close"
        if self.path.startswith("/v2/alerts/") and self.path.endswith("/acknowledge"):
            return "opsgenie_ack"
        if self.path.startswith("/slack"):
            return "slack"
        if self.path.startswith("/webhook"):
            return "webhook"
        return "unknown"


@dataclass
class CaptureServer:
    host: str = "127.0.0.1"
    requests: list[Captured] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw
                parts = urlsplit(self.path)
                item = Captured(
                    "POST", parts.path, parse_qs(parts.query), dict(self.headers.items()), body, raw
                )
                status, reply = server._reply(item)
                with server._lock:
                    server.requests.append(item)
                    server._lock.notify_all()
                data = json.dumps(reply).encode() if not isinstance(reply, str) else reply.encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "application/json" if not isinstance(reply, str) else "text/plain"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _reply(self, item: Captured) -> tuple[int, Any]:
        kind = item.kind
        with self._lock:
            if self.fail_first.get(kind, 0) > 0:
                self.fail_first[kind] -= 1
                return 503, {"message": "service unavailable (test: failing on purpose)"}
        if kind == "pagerduty":
            body = item.body if isinstance(item.body, dict) else {}
            if not body.get("routing_key") or body.get("event_action") not in (
                "trigger",
                "acknowledge",
                "resolve",
            ):
                return 400, {"status": "invalid event", "message": "Event object is invalid"}
            return 202, {
                "status": "success",
                "message": "Event processed",
                "dedup_key": body.get("dedup_key"),
            }
        if kind in ("opsgenie", "opsgenie_close", "opsgenie_ack"):
            if not item.headers.get("Authorization", "").startswith("GenieKey "):
                return 401, {"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())}
            return 202, {"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())}
        if kind in ("slack", "webhook"):
            return 200, "ok"
        return 404, {"message": "not found"}

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CaptureServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def of(self, kind: str, where: Callable[[Captured], bool] | None = None) -> list[Captured]:
        with self._lock:
            return [r for r in self.requests if r.kind == kind and (where is None or where(r))]

    def wait_for(
        self,
        kind: str,
        where: Callable[[Captured], bool] | None = None,
        count: int = 1,
        timeout: float = 30.0,
    ) -> list[Captured]:
        """Block until ``count`` matching requests arrived; raise with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [r for r in self.requests if r.kind == kind and (where is None or where(r))]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.kind, r.path) for r in self.requests]
                    raise AssertionError(f"expected {count} {kind} request(s), got {len(found)}; all: {seen}")
                self._lock.wait(left)
