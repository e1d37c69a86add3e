"""Routing health through a real load balancer: Debian's haproxy in front of three backends,
weighted by errorgate's agent-check answers. The service errorgate marks ``fail`` gets no
traffic; the ``warn`` one keeps half its weight (so a third of the traffic beside a healthy one)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from errorgate.service.gateway import Gateway
from tests.support.deploy_traffic import Traffic, send
from tests.support.gateway import free_port, gateway_yaml, running_gateway

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
pytestmark = pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="needs Debian's haproxy (make system-deps)"
)

SERVICES = ("alpha", "beta", "gamma")


def _backend(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    cfg = gateway_yaml(
        tmp_path / "data",
        exporter=f"  file: {{path: {tmp_path / 'out'}}}",
        exporter_id="file",
        processors="{classify: {deploys: {health: {recover_after: 1s}}}}",
        pipeline_processors="[classify]",
        metrics_processors="[]",
        service_extra="",
    ).replace("  telemetry:\n", f"  telemetry:\n    agent_check: {{endpoint: 127.0.0.1:{free_port()}}}\n")
    with running_gateway(cfg) as gw:
        yield gw


def _health(gw: Gateway, service: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{gw.metrics_endpoint}/api/v1/services/{service}/health") as r:
            return str(json.loads(r.read())["status"])
    except urllib.error.HTTPError as e:
        return str(json.loads(e.read())["status"])


def _agent(gw: Gateway, text: bytes) -> bytes:
    host, _, port = gw.agent_check_endpoint.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(text)
        return s.recv(100)


def _haproxy_cfg(port: int, backends: dict[str, int], agent: str) -> str:
    host, _, agent_port = agent.rpartition(":")
    servers = "\n".join(
        f"  server {name} 127.0.0.1:{p} weight 100 check inter 200ms agent-check agent-addr {host} "
        f'agent-port {agent_port} agent-inter 200ms agent-send "{name}\\n"'
        for name, p in backends.items()
    )
    return f"""
global
  maxconn 200
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
{servers}
"""


def test_haproxy_follows_routing_health(gateway: Gateway, tmp_path: Path) -> None:
    # SLO 99 % (catalog default): alpha burns 50x (fail), beta 10x (warn: 6 ≤ burn < 14.4), gamma 0.
    send(
        gateway.grpc_endpoint,
        Traffic("alpha", "1", 400, fail_per_100=50, status_code=503),
        Traffic("beta", "1", 400, fail_per_100=10, status_code=503),
        Traffic("gamma", "1", 400),
    )
    deadline = time.monotonic() + 20
    while [_health(gateway, s) for s in SERVICES] != ["fail", "warn", "pass"]:
        assert time.monotonic() < deadline, [_health(gateway, s) for s in SERVICES]
        time.sleep(0.2)
    assert _agent(gateway, b"alpha\n") == b"down\n"
    assert _agent(gateway, b"beta\n") == b"up ready 50%\n"
    assert _agent(gateway, b"gamma") == b"up ready 100%\n"  # no line end: the pause ends the name
    assert _agent(gateway, b"unknown\n") == b"up ready 100%\n"

    backends = {name: _backend(name) for name in SERVICES}
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    ports = {name: int(s.server_address[1]) for name, s in backends.items()}
    cfg.write_text(_haproxy_cfg(port, ports, gateway.agent_check_endpoint))
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_listening(port, proc)
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + 20
        while True:  # until the agent's answers have reached every server
            counts = Counter(_get(port) for _ in range(60))
            if counts["alpha"] == 0 and 12 <= counts["beta"] <= 28:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, counts
            time.sleep(0.3)
        counts = Counter(_get(port) for _ in range(300))
        assert counts["alpha"] == 0
        assert counts["beta"] == pytest.approx(100, abs=15)  # weight 50 against 100: a third
        assert counts["gamma"] == pytest.approx(200, abs=15)
    finally:
        proc.terminate()
        proc.wait(5)
        for server in backends.values():
            server.shutdown()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "haproxy did not listen"
            time.sleep(0.05)


def _get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return r.read().decode()
