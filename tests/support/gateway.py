"""Run a real errorgate for tests: in-process (``running_gateway``) or as a child process
(``GatewayProcess``, for SIGKILL/SIGTERM tests). Configs are real YAML through the real loader."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from errorgate.config import parse_config
from errorgate.service.gateway import Gateway

ROOT = Path(__file__).resolve().parents[2]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this test process (the kernel may offer
    a just-closed port again, and a config needs several distinct ones)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def gateway_yaml(
    data_dir: Path,
    *,
    exporter: str,
    processors: str = "{}",
    pipeline_processors: str = "[]",
    metrics_processors: str | None = None,
    grpc_port: int = 0,
    http_port: int = 0,
    metrics_port: int = 0,
    receiver_extra: str = "",
    service_extra: str = "",
    exporter_id: str = "otlp/out",
    grpc_host: str = "127.0.0.1",
) -> str:
    """A complete config. ``exporter`` is the YAML of the ``exporters:`` section body (indented 2).
    ``grpc_host``: another loopback address (127.0.0.2, ...) lets replicas share one port, as
    pods behind one DNS name do."""
    mp = pipeline_processors if metrics_processors is None else metrics_processors
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: {grpc_host}:{grpc_port}}}
      http: {{endpoint: 127.0.0.1:{http_port}}}
{receiver_extra}
processors: {processors}
exporters:
{exporter}
service:
  data_dir: {data_dir}
  shutdown_timeout: 10s
{service_extra}
  pipelines:
    traces:  {{receivers: [otlp], processors: {pipeline_processors}, exporters: [{exporter_id}]}}
    logs:    {{receivers: [otlp], processors: {pipeline_processors}, exporters: [{exporter_id}]}}
    metrics: {{receivers: [otlp], processors: {mp}, exporters: [{exporter_id}]}}
  telemetry:
    metrics: {{endpoint: 127.0.0.1:{metrics_port}}}
"""


def otlp_exporter_yaml(endpoint: str, *, queue_dir: Path | None = None, extra: str = "") -> str:
    queue = f"sending_queue: {{storage: {queue_dir}, max_size_mib: 64}}" if queue_dir else "sending_queue: {}"
    return f"""  otlp/out:
    endpoint: {endpoint}
    tls: {{insecure: true}}
    timeout: 2s
    retry_on_failure: {{initial_interval: 50ms, max_interval: 500ms}}
    circuit_breaker: {{failure_threshold: 5, open_duration: 300ms}}
    {queue}
{extra}"""


def write_config(tmp_path: Path, *, exporters: str, pipelines: str, extra: str = "") -> Path:
    """``tmp_path/errorgate.yaml`` for a command run on it (``errorgate dlq ...``): the OTLP
    receiver with its defaults, data under ``tmp_path/data``. ``exporters`` and ``pipelines`` are
    the bodies of those sections and ``extra`` more top-level sections, each written unindented."""
    path = tmp_path / "errorgate.yaml"
    path.write_text(
        f"""
receivers:
  otlp: {{}}
exporters:
{textwrap.indent(textwrap.dedent(exporters).strip(), "  ")}
service:
  data_dir: {tmp_path / "data"}
  pipelines:
{textwrap.indent(textwrap.dedent(pipelines).strip(), "    ")}
{textwrap.dedent(extra).strip()}
"""
    )
    return path


@contextmanager
def running_gateway(yaml_text: str) -> Iterator[Gateway]:
    gateway = Gateway(parse_config(yaml_text, "<test>"))
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop(timeout=15)


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scrape(endpoint: str) -> str:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as r:
        return r.read().decode()


class GatewayProcess:
    """``errorgate serve --config FILE`` as a child process on fixed free ports."""

    def __init__(
        self,
        config_path: Path,
        grpc_port: int,
        metrics_port: int,
        env: dict[str, str] | None = None,
        stderr_file: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.config_path = config_path
        self.host = host  # the gRPC receiver's address (metrics stay on 127.0.0.1)
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.extra_env = env or {}  # added to this process's environment
        self.proc: subprocess.Popen[bytes] | None = None
        # A file instead of a pipe, for runs that log more than a pipe holds while nobody reads it.
        self.stderr_file = stderr_file

    def start(self, timeout: float = 60, require_ready: bool = True) -> GatewayProcess:
        """Start and wait until it serves; ``require_ready=False`` also accepts a /readyz that
        answers "not ready" (a gateway started on a full disk)."""
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "errorgate", "serve", "--config", str(self.config_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if self.stderr_file is None else self.stderr_file.open("ab"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"errorgate exited early ({self.proc.returncode}): {err[-2000:]}")
            try:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1):
                        pass
                except urllib.error.HTTPError:
                    if require_ready:
                        raise
                socket.create_connection((self.host, self.grpc_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("errorgate did not become ready")

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def final_metrics(gateway: Gateway) -> str:
    """Stop (drain) the gateway, then read its metrics: exporters count an item only after the
    backend acknowledged it, so counts read while items are in flight can lag the sink."""
    from prometheus_client import generate_latest

    gateway.stop()
    return generate_latest(gateway.telemetry.registry).decode()
