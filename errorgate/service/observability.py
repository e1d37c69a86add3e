"""The self-telemetry endpoint: Prometheus ``/metrics``, ``/healthz`` (liveness) and
``/readyz`` in the health+json format (pass / warn / fail)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from errorgate.component import HttpAnswer, HttpQuery, Route

# Request bodies a route may receive (a Flagger webhook payload is a few hundred bytes).
MAX_BODY_BYTES = 64 * 1024

Readiness = Callable[[], tuple[str, dict[str, object]]]


def route(
    routes: Sequence[tuple[str, Route]], method: str, target: str, body: bytes = b""
) -> HttpAnswer | None:
    """The answer of the declared route ``target`` falls under, if any (``routes`` longest
    prefix first)."""
    parts = urlsplit(target)
    path = unquote(parts.path)
    for prefix, handler in routes:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return handler(HttpQuery(method, path, dict(parse_qsl(parts.query)), body))
    return None


def service_health(routes: Sequence[tuple[str, Route]]) -> Callable[[str], HttpAnswer | None]:
    """A service's routing health (``GET /api/v1/services/{name}/health``, CONVENTIONS) by name."""
    return lambda name: route(routes, "GET", f"/api/v1/services/{quote(name, safe='')}/health")


class ObservabilityServer:
    def __init__(
        self,
        endpoint: str,
        registry: CollectorRegistry,
        readiness: Readiness,
        version: str,
        routes: Sequence[tuple[str, Route]] = (),
    ) -> None:
        host, _, port = endpoint.rpartition(":")
        self._address = (host.strip("[]") or "127.0.0.1", int(port))
        self._registry = registry
        self._readiness = readiness
        self._version = version
        self._routes = routes
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The address it listens on (":port" means 127.0.0.1 here, unlike the receivers)."""
        return self._address[0]

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def route(self, method: str, target: str, body: bytes = b"") -> HttpAnswer | None:
        return route(self._routes, method, target, body)

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet: scrapes are not news
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer._registry))
                elif path == "/healthz":
                    self._json(200, {"status": "pass", "version": str(outer._version)})
                elif path == "/readyz":
                    status, checks = outer._readiness()
                    body = {"status": status, "version": outer._version, "checks": checks}
                    self._json(503 if status == "fail" else 200, body)
                else:
                    self._routed("GET", b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._send(413, "text/plain", b"request body too large\n")
                    return
                self._routed("POST", self.rfile.read(length))

            def _routed(self, method: str, body: bytes) -> None:
                answer = outer.route(method, self.path, body)
                if answer is None:
                    self._send(404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n")
                else:
                    self._send(answer.status, answer.content_type, json.dumps(answer.body).encode())

            def _json(self, code: int, body: Mapping[str, object]) -> None:
                self._send(code, "application/health+json", json.dumps(body).encode())

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(self._address, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="errorgate-metrics", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
