"""Real deployment topologies for tests: OpenTelemetry SDK or raw OTLP -> Collector agent ->
errorgate replica(s) -> Collector gateway -> OTLP sink, every hop a real process on loopback.

Each replica also exports to a "tap" sink of its own (a second exporter in its pipelines), so a
test can tell which replica handled which span; the gateway path is what a backend sees.

Shared state: ``Topology(shared_state="redis", redis_url=...)`` adds a ``redis`` extension to
every replica's config, for the shared-state work of issue 20; the config hook is all this
module knows of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from tests.support.gateway import GatewayProcess, free_port, gateway_yaml, otlp_exporter_yaml
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


def agent_yaml(grpc_port: int, health_port: int, replicas: list[str], loadbalancing: bool) -> str:
    """The agent next to the services. With ``loadbalancing`` it spreads traces over the
    replicas by trace id (static resolver); otherwise it sends to the one replica with the OTLP
    exporter. Either way the per-endpoint sending queue + retry hold what the agent has
    acknowledged until a replica takes it."""
    resilience = """retry_on_failure: {enabled: true, initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s}
        sending_queue: {enabled: true, num_consumers: 2, queue_size: 10000}
        timeout: 5s"""
    if loadbalancing:
        hostnames = ", ".join(replicas)
        exporter = f"""  loadbalancing/errorgate:
    routing_key: traceID
    protocol:
      otlp:
        tls: {{insecure: true}}
        {resilience}
    resolver:
      static: {{hostnames: [{hostnames}]}}"""
        eid = "loadbalancing/errorgate"
    else:
        (endpoint,) = replicas
        exporter = f"""  otlp/errorgate:
    endpoint: {endpoint}
    tls: {{insecure: true}}
    {resilience.replace("        ", "    ")}"""
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
{_TELEMETRY}
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
    )


class Topology:
    """agent -> N errorgate replicas -> Collector gateway -> sink, all started on enter."""

    def __init__(
        self,
        workdir: Path,
        replicas: int = 1,
        *,
        loadbalancing: bool = True,
        processors: list[str] | None = None,
        shared_state: str | None = None,
        redis_url: str = "",
    ) -> None:
        self.workdir = workdir
        self.n = replicas
        self.loadbalancing = loadbalancing
        self.processors = processors if processors is not None else ["classify", "redact"]
        self.shared_state = shared_state
        self.redis_url = redis_url
        self.sink = OtlpSink()
        self.taps = [OtlpSink() for _ in range(replicas)]
        self.replicas: list[GatewayProcess] = []
        self.agent_port = free_port()
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

    def _start(self) -> None:
        st = self._stack
        st.enter_context(self.sink)
        gw_port, gw_health = free_port(), free_port()
        self.gateway = CollectorProcess(
            collector_gateway_yaml(gw_port, gw_health, self.sink), self.workdir, gw_health, "gateway"
        )
        st.enter_context(self.gateway)
        for i, tap in enumerate(self.taps):
            st.enter_context(tap)
            data_dir = self.workdir / f"replica{i}"
            data_dir.mkdir()
            port, metrics_port = free_port(), free_port()
            cfg = self.workdir / f"replica{i}.yaml"
            cfg.write_text(
                replica_yaml(
                    data_dir,
                    port,
                    metrics_port,
                    f"127.0.0.1:{gw_port}",
                    tap,
                    self.processors,
                    self.shared_state,
                    self.redis_url,
                )
            )
            replica = GatewayProcess(cfg, port, metrics_port, stderr_file=self.workdir / f"replica{i}.log")
            self.replicas.append(replica)
            st.callback(replica.close)
        # Started side by side: each is a Python process that takes seconds to import.
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda r: r.start(), self.replicas))
        health = free_port()
        self.agent = CollectorProcess(
            agent_yaml(self.agent_port, health, [r.grpc_endpoint for r in self.replicas], self.loadbalancing),
            self.workdir,
            health,
            "agent",
        )
        st.enter_context(self.agent)

    def restart_replica(self, i: int) -> GatewayProcess:
        """A replacement process for replica ``i``: same ports, same data directory (its disk
        queue), as a restarted pod of a StatefulSet would have."""
        old = self.replicas[i]
        new = GatewayProcess(old.config_path, old.grpc_port, old.metrics_port, stderr_file=old.stderr_file)
        self.replicas[i] = new
        self._stack.callback(new.close)
        return new.start()

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
