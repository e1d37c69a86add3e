"""The incident engine as a role of ``errorgate serve``: one process runs the gateway and the
engine, started and stopped together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from errorgate.cli import service_roles
from errorgate.config import parse_config
from tests.support.gateway import gateway_yaml
from tests.support.incidents import TOKEN, alert, alertmanager_payload, call

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _config(tmp_path: Path, incidents: str, http_port: int = 0) -> str:
    text = gateway_yaml(tmp_path / "data", exporter="  debug: {verbosity: basic}", exporter_id="debug",
                        http_port=http_port)  # fmt: skip
    return text + incidents


def test_the_role_is_on_when_the_section_is_present_unless_disabled(tmp_path: Path) -> None:
    port = _free_port()
    assert service_roles(parse_config(_config(tmp_path, ""))) == []
    off = parse_config(_config(tmp_path, f"incidents: {{enabled: false, endpoint: 127.0.0.1:{port}}}\n"))
    assert service_roles(off) == []
    [role] = service_roles(parse_config(_config(tmp_path, f"incidents: {{endpoint: 127.0.0.1:{port}}}\n")))
    assert role.name == "incidents"
    role.stop()  # built, never started: stop still frees the socket and the store


def test_serve_runs_the_engine_next_to_the_gateway_and_sigterm_stops_both(tmp_path: Path) -> None:
    engine_port, gateway_port = _free_port(), _free_port()
    path = tmp_path / "errorgate.yaml"
    path.write_text(_config(tmp_path, f"incidents:\n  endpoint: 127.0.0.1:{engine_port}\n", gateway_port))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ERRORGATE_INCIDENTS_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "errorgate", "serve", "--config", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{engine_port}"
    try:
        deadline = time.monotonic() + 30
        while not (_listening(engine_port) and _listening(gateway_port)):
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "serve did not open both ports"
            time.sleep(0.2)
        assert call("GET", f"{url}/api/v1/incidents", token=None).body == {"incidents": []}
        reply = call("POST", f"{url}/api/v1/alerts/alertmanager", alertmanager_payload(alert()))
        assert reply.status == 200, reply.body
        [inc] = call("GET", f"{url}/api/v1/incidents", token=None).body["incidents"]
        assert inc["severity"] == "P1" and inc["services"] == ["checkout"]
        assert (tmp_path / "data" / "incidents.db").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert not _listening(engine_port) and not _listening(gateway_port)
    assert TOKEN not in err.decode()


def test_a_bad_engine_setting_stops_serve_before_the_gateway_listens(tmp_path: Path) -> None:
    path = tmp_path / "errorgate.yaml"
    gateway_port = _free_port()
    path.write_text(_config(tmp_path, "incidents: {escalation: {slack: {}}}\n", gateway_port))
    env = {k: v for k, v in os.environ.items() if k != "ERRORGATE_SLACK_WEBHOOK_URL"}
    proc = subprocess.run([sys.executable, "-m", "errorgate", "serve", "--config", str(path)],
                          env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "ERRORGATE_SLACK_WEBHOOK_URL" in proc.stderr.decode()
    assert not _listening(gateway_port)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
