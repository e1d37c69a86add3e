"""HAProxy's ``agent-check`` protocol over routing health: HAProxy connects, sends the service's
name (``agent-send "checkout\\n"``), and reads one line back:

- ``pass`` → ``up ready 100%``; ``warn`` → ``up ready <warn_weight>%`` (about that share of
  the traffic it would get); ``fail`` → ``down`` (or ``drain`` with ``agent_check.fail: drain``);
- a service errorgate has no telemetry for → ``up ready 100%`` (no evidence against it).

The answer comes from the same declared route as ``GET /api/v1/services/{name}/health``.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable

from errorgate.component import HttpAnswer
from errorgate.config import AgentCheckConfig, binds_all_interfaces

log = logging.getLogger("errorgate.agent_check")

Health = Callable[[str], HttpAnswer | None]
READ_TIMEOUT_SECONDS = 2.0
NAME_PAUSE_SECONDS = 0.2
MAX_NAME_BYTES = 256


def agent_word(answer: HttpAnswer | None, config: AgentCheckConfig) -> str:
    status = answer.body.get("status") if answer is not None and answer.status != 404 else "pass"
    if status == "fail":
        return config.fail
    if status == "warn":
        return f"up ready {config.warn_weight}%"
    return "up ready 100%"


def _read_name(sock: socket.socket) -> str:
    """The service name sent: up to a newline, or whatever came before a short pause
    (``agent-send`` sends its string verbatim, with or without a line end)."""
    data = b""
    sock.settimeout(READ_TIMEOUT_SECONDS)
    try:
        while b"\n" not in data and len(data) < MAX_NAME_BYTES:
            chunk = sock.recv(MAX_NAME_BYTES)
            if not chunk:
                break
            data += chunk
            sock.settimeout(NAME_PAUSE_SECONDS)
    except OSError:
        pass  # a pause after the name, or HAProxy gave up: answer what came
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()


class _V4Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True


class _V6Server(_V4Server):
    address_family = socket.AF_INET6


class AgentCheckServer:
    def __init__(self, config: AgentCheckConfig, health: Health) -> None:
        assert config.endpoint
        host, _, port = config.endpoint.rpartition(":")
        self._address = (host.strip("[]") or "127.0.0.1", int(port))
        self.config = config
        self.health = health
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"[{host!s}]:{port}" if ":" in str(host) else f"{host!s}:{port}"

    def start(self) -> None:
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            timeout = READ_TIMEOUT_SECONDS

            def handle(self) -> None:
                name = _read_name(self.request)
                word = agent_word(outer.health(name), outer.config) if name else "up ready 100%"
                self.wfile.write(word.encode() + b"\n")

        server_class = _V6Server if ":" in self._address[0] else _V4Server
        self._server = server_class(self._address, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="errorgate-agent-check", daemon=True).start()
        if binds_all_interfaces(self._address[0]):
            # The protocol has no authentication: any host that reaches the port learns which
            # services errorgate would take out of a route (and their names).
            log.warning(
                "service.telemetry.agent_check.endpoint listens on all network interfaces (%s): "
                "the agent-check protocol has no authentication, so any host that reaches it reads "
                "the routing health of every service; write 127.0.0.1 or the address HAProxy "
                "connects from unless that is intended",
                self.config.endpoint,
            )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
