"""Real deployment topologies for tests: OpenTelemetry SDK or raw OTLP -> Collector agent ->
errorgate replica(s) -> Collector gateway -> OTLP sink, every hop a real process on loopback.

Each replica also exports to a "tap" sink of its own (a second exporter in its pipelines), so a
test can tell which replica handled which span; the gateway path is what a backend sees.

Shared state: ``Topology(shared_state="redis", redis_url=...)`` adds a ``redis`` extension to
every replica's config, for the shared-state work of issue 20; the config hook is all this
module knows of it."""

from __future__ import annotations

import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from tests.support.gateway import GatewayProcess, free_port, gateway_yaml, otlp_exporter_yaml
from tests.support.hosts import HostsFile, require_private_mounts
from tests.support.otelcol import CollectorProcess
from tests.support.otlp_sink import OtlpSink

# Quiet Collector self-telemetry: no :8888 listener (several Collectors run at once), warnings only.
_TELEMETRY = """  telemetry:
    metrics: {level: none}
    logs: {level: warn}"""


def collector_gateway_yaml(grpc_port: int, health_port: int, sink: OtlpSink) -> str:
    """The Collector behind errorgate: OTLP/gRPC in, OTLP/HTTP out to the sink."""
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
exporters:
  otlphttp/sink:
    endpoint: {sink.http_url}
    retry_on_failure: {{enabled: true, initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}}
extensions:
  health_check: {{endpoint: 127.0.0.1:{health_port}}}
service:
  extensions: [health_check]
{_TELEMETRY}
  pipelines:
    traces: {{receivers: [otlp], exporters: [otlphttp/sink]}}
    logs: {{receivers: [otlp], exporters: [otlphttp/sink]}}
"""


# The per-endpoint otlp exporters' resilience when the agent keeps what it acknowledged in a
# queue per replica (the default): a dead replica's share waits there for that address.
_PER_ENDPOINT = """retry_on_failure: {enabled: true, initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}
        sending_queue: {enabled: true, num_consumers: 2, queue_size: 10000}
        timeout: 5s"""
# requeue=True: the queue and retry sit in front of the hash ring instead (the loadbalancing
# exporter's own settings), and the per-endpoint exporters fail fast. A failed batch goes back
# to that queue and is hashed again on each retry, so once the resolver has dropped a dead
# replica its traces go to the survivors. (Upstream shuts a removed endpoint's exporter down
# without retries, so anything still queued per endpoint is flushed once to the dead address.)
_BALANCER_QUEUE = """retry_on_failure: {enabled: true, initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}
    sending_queue: {enabled: true, num_consumers: 2, queue_size: 10000}
    timeout: 5s"""
_FAIL_FAST = """retry_on_failure: {enabled: false}
        sending_queue: {enabled: false}
        timeout: 2s"""


def _telemetry(metrics_port: int | None) -> str:
    if metrics_port is None:
        return _TELEMETRY
    return f"""  telemetry:
    metrics:
      level: detailed
      readers:
        - pull: {{exporter: {{prometheus: {{host: 127.0.0.1, port: {metrics_port}}}}}}}
    logs: {{level: warn}}"""


def loadbalancing_yaml(replicas: list[str], dns: tuple[str, int] | None, requeue: bool) -> str:
    """The agent's loadbalancing exporter: static list of ``replicas``, or the A records of
    ``dns`` = (hostname, port), re-resolved every second."""
    if dns is None:
        resolver = f"static: {{hostnames: [{', '.join(replicas)}]}}"
    else:
        resolver = f'dns: {{hostname: {dns[0]}, port: "{dns[1]}", interval: 1s, timeout: 1s}}'
    return f"""  loadbalancing/errorgate:
    routing_key: traceID
    {_BALANCER_QUEUE if requeue else ""}
    protocol:
      otlp:
        tls: {{insecure: true}}
        {_FAIL_FAST if requeue else _PER_ENDPOINT}
    resolver:
      {resolver}"""


def agent_yaml(
    grpc_port: int,
    health_port: int,
    replicas: list[str],
    loadbalancing: bool,
    *,
    dns: tuple[str, int] | None = None,
    requeue: bool = False,
    metrics_port: int | None = None,
) -> str:
    """The agent next to the services. With ``loadbalancing`` it spreads traces over the
    replicas by trace id; otherwise it sends to the one replica with the OTLP exporter.
    Either way a sending queue + retry hold what the agent has acknowledged until a replica
    takes it. ``metrics_port``: the agent's own metrics (otelcol_loadbalancer_*) there."""
    if loadbalancing:
        exporter = loadbalancing_yaml(replicas, dns, requeue)
        eid = "loadbalancing/errorgate"
    else:
        (endpoint,) = replicas
        exporter = f"""  otlp/errorgate:
    endpoint: {endpoint}
    tls: {{insecure: true}}
    {_PER_ENDPOINT.replace("        ", "    ")}"""
        eid = "otlp/errorgate"
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc_port}}}
processors:
  batch: {{send_batch_size: 512, timeout: 100ms}}
exporters:
{exporter}
extensions:
  health_check: {{endpoint: 127.0.0.1:{health_port}}}
service:
  extensions: [health_check]
{_telemetry(metrics_port)}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [{eid}]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [{eid}]}}
"""


def replica_yaml(
    data_dir: Path,
    grpc_port: int,
    metrics_port: int,
    gateway_endpoint: str,
    tap: OtlpSink,
    processors: list[str],
    shared_state: str | None = None,
    redis_url: str = "",
    grpc_host: str = "127.0.0.1",
) -> str:
    tap_exporter = f"""  otlp/tap:
    endpoint: {tap.grpc_endpoint}
    tls: {{insecure: true}}
    sending_queue: {{}}
"""
    extensions = ""
    # Trace assembly holds spans until their trace is complete (10 s by default); 1 s keeps the
    # tests quick, as the bench's profiles do.
    service_extra = "  assembly: {decision_wait: 1s}"
    if shared_state == "redis":
        # The shared-state extension of issue 20's second half; its settings are its own.
        extensions = f"extensions:\n  redis: {{endpoint: {redis_url!r}}}\n"
        service_extra += "\n  extensions: [redis]"
    return gateway_yaml(
        data_dir,
        exporter=otlp_exporter_yaml(gateway_endpoint, queue_dir=data_dir / "queue") + tap_exporter,
        processors="{" + ", ".join(f"{p}: {{}}" for p in processors) + "}",
        pipeline_processors="[" + ", ".join(processors) + "]",
        grpc_port=grpc_port,
        http_port=free_port(),
        metrics_port=metrics_port,
        receiver_extra=extensions,
        service_extra=service_extra,
        exporter_id="otlp/out, otlp/tap",
        grpc_host=grpc_host,
    )


class Topology:
    """agent -> N errorgate replicas -> Collector gateway -> sink, all started on enter.

    ``resolver="dns"``: replica i listens on 127.0.0.{i+2} (one port for all, as pods behind a
    headless Service), the agent resolves ``REPLICAS_HOSTNAME`` through a private /etc/hosts
    (``tests.support.hosts``) and a test changes the answer with ``remove_from_resolver``.
    ``requeue``: the agent's queue in front of the hash ring (see ``loadbalancing_yaml``)."""

    REPLICAS_HOSTNAME = "errorgate-replicas.test"

    def __init__(
        self,
        workdir: Path,
        replicas: int = 1,
        *,
        loadbalancing: bool = True,
        processors: list[str] | None = None,
        shared_state: str | None = None,
        redis_url: str = "",
        resolver: Literal["static", "dns"] = "static",
        requeue: bool = False,
    ) -> None:
        self.workdir = workdir
        self.n = replicas
        self.loadbalancing = loadbalancing
        self.processors = processors if processors is not None else ["classify", "redact"]
        self.shared_state = shared_state
        self.redis_url = redis_url
        self.resolver = resolver
        self.requeue = requeue
        self.sink = OtlpSink()
        self.taps = [OtlpSink() for _ in range(replicas)]
        self.replicas: list[GatewayProcess] = []
        self.agent_port = free_port()
        self.agent_metrics_port = free_port()
        self.hosts: HostsFile | None = None
        self._stack = ExitStack()

    @property
    def agent_endpoint(self) -> str:
        return f"127.0.0.1:{self.agent_port}"

    def __enter__(self) -> Topology:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _replica_hosts(self) -> list[str]:
        if self.resolver == "dns":
            return [f"127.0.0.{i + 2}" for i in range(self.n)]
        return ["127.0.0.1"] * self.n

    def _start_replicas(self, gateway_endpoint: str) -> None:
        hosts = self._replica_hosts()
        shared_port = _port_free_on(hosts) if self.resolver == "dns" else 0
        for i, tap in enumerate(self.taps):
            self._stack.enter_context(tap)
            data_dir = self.workdir / f"replica{i}"
            data_dir.mkdir()
            port, metrics_port = shared_port or free_port(), free_port()
            cfg = self.workdir / f"replica{i}.yaml"
            cfg.write_text(
                replica_yaml(
                    data_dir,
                    port,
                    metrics_port,
                    gateway_endpoint,
                    tap,
                    self.processors,
                    self.shared_state,
                    self.redis_url,
                    grpc_host=hosts[i],
                )
            )
            replica = GatewayProcess(
                cfg, port, metrics_port, stderr_file=self.workdir / f"replica{i}.log", host=hosts[i]
            )
            self.replicas.append(replica)
            self._stack.callback(replica.close)
        # Started side by side: each is a Python process that takes seconds to import.
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda r: r.start(), self.replicas))

    def _start(self) -> None:
        st = self._stack
        st.enter_context(self.sink)
        gw_port, gw_health = free_port(), free_port()
        self.gateway = CollectorProcess(
            collector_gateway_yaml(gw_port, gw_health, self.sink), self.workdir, gw_health, "gateway"
        )
        st.enter_context(self.gateway)
        self._start_replicas(f"127.0.0.1:{gw_port}")
        dns, prefix = None, []
        if self.resolver == "dns":
            require_private_mounts()
            self.hosts = HostsFile(self.workdir / "hosts", self.REPLICAS_HOSTNAME, self._replica_hosts())
            dns, prefix = (self.REPLICAS_HOSTNAME, self.replicas[0].grpc_port), self.hosts.command_prefix()
        health = free_port()
        config = agent_yaml(
            self.agent_port,
            health,
            [r.grpc_endpoint for r in self.replicas],
            self.loadbalancing,
            dns=dns,
            requeue=self.requeue,
            metrics_port=self.agent_metrics_port,
        )
        self.agent = CollectorProcess(config, self.workdir, health, "agent", command_prefix=prefix)
        st.enter_context(self.agent)

    def remove_from_resolver(self, i: int) -> None:
        """What an orchestrator does when a pod dies: its address leaves the DNS answer."""
        assert self.hosts is not None, "remove_from_resolver needs Topology(resolver='dns')"
        hosts = self._replica_hosts()
        self.hosts.set([h for j, h in enumerate(hosts) if j != i])

    def agent_metrics(self) -> str:
        """The agent Collector's own Prometheus metrics (otelcol_loadbalancer_* and the rest)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.agent_metrics_port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def restart_replica(self, i: int) -> GatewayProcess:
        """A replacement process for replica ``i``: same address and ports, same data directory
        (its disk queue and hold log), as a restarted pod of a StatefulSet would have."""
        old = self.replicas[i]
        new = GatewayProcess(
            old.config_path, old.grpc_port, old.metrics_port, stderr_file=old.stderr_file, host=old.host
        )
        self.replicas[i] = new
        self._stack.callback(new.close)
        return new.start()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _port_free_on(hosts: list[str]) -> int:
    """One port that every one of ``hosts`` (loopback addresses) can bind."""
    while True:
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
