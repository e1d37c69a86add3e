"""Configuration in the OpenTelemetry Collector's shape.

``load_config`` reads YAML, substitutes ``${env:NAME}`` / ``${env:NAME:-default}``,
validates the top level, then validates each component's section against the
model its factory registered. Every error names the key path that was wrong.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from errorgate.component import (
    EXPORTERS,
    EXTENSIONS,
    PROCESSORS,
    RECEIVERS,
    ComponentConfig,
    Registry,
    component_type,
    processor_capabilities,
)


class ConfigError(ValueError):
    """A configuration problem; the message starts with the key path."""


# ---------------------------------------------------------------- durations & sizes

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)?\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """'500ms', '5s', '1m', '2h', '30d' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 5s, got a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if isinstance(value, str):
        total = 0.0
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", value.replace(" ", ""))
        if parts and "".join(n + u for n, u in parts) == value.replace(" ", ""):
            for number, unit in parts:
                total += float(number) * _UNITS[unit]
            return total
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"expected a duration like 500ms, 5s, 1m or 1h30m, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]


# ---------------------------------------------------------------- endpoints


def binds_all_interfaces(host: str) -> bool:
    """True for a host that means every network interface: 0.0.0.0, ::, or none at all (the
    receivers read ":4317" as 0.0.0.0). Host names are taken as the user's deliberate choice."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


# ---------------------------------------------------------------- shared sub-models


class TLSServerConfig(ComponentConfig):
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set -> mutual TLS: clients must present a cert signed by it


class AuthConfig(ComponentConfig):
    """Bearer-token auth for receivers. Tokens come from a file (one per line) and/or an env var."""

    bearer_tokens_file: str | None = None
    bearer_token_env: str | None = None


class TLSClientConfig(ComponentConfig):
    insecure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name_override: str | None = None


class RetryConfig(ComponentConfig):
    enabled: bool = True
    initial_interval: Duration = 1.0
    max_interval: Duration = 30.0
    multiplier: float = Field(default=1.5, ge=1.0)
    max_elapsed_time: Duration = 0.0  # 0 = retry forever (the item stays queued)


class QueueBatchConfig(ComponentConfig):
    """How queued batches are combined into export requests (the Collector's
    ``sending_queue.batch``). Each export request costs the gateway and the backend a call, so a
    consumer waits up to ``flush_timeout`` for ``min_size`` items before sending. The ack to the
    client never waits for this: data is in the queue before the ack."""

    enabled: bool = True
    flush_timeout: Duration = 0.1
    min_size: int = Field(default=4096, ge=1)  # items: send as soon as this many are gathered
    max_size: int = Field(default=16384, ge=1)  # items per export request
    max_size_mib: float = Field(default=1.0, gt=0, le=64)  # serialized bytes per export request

    @model_validator(mode="after")
    def _sizes(self) -> QueueBatchConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        return self


class QueueConfig(ComponentConfig):
    enabled: bool = True
    storage: str | None = None  # directory -> persistent queue; None -> in memory
    max_size_mib: float = Field(default=512, gt=0)
    num_consumers: int = Field(default=2, ge=1, le=64)
    batch: QueueBatchConfig = Field(default_factory=QueueBatchConfig)


class CircuitBreakerConfig(ComponentConfig):
    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    open_duration: Duration = 10.0


_MIB = 1024 * 1024


class AssemblyConfig(ComponentConfig):
    """Trace assembly (``service.assembly``): how long and how much the gateway holds spans so
    that processors declaring ``needs_whole_traces`` see whole traces. ``sample``'s settings
    extend this model, so ``sample.decision_wait`` (and the other keys) still set it for
    ``sample``'s pipelines."""

    decision_wait: Duration = 10.0
    num_traces: int = Field(default=50_000, ge=1)
    max_spans_per_trace: int = Field(default=10_000, ge=1)
    max_bytes_per_trace: int = Field(default=4 * _MIB, ge=1024)
    max_total_mib: float = Field(default=256, gt=0)
    late_cache_size: int = Field(default=100_000, ge=1)
    # Log records with a trace id wait until their trace is decided (``pipeline.hold.logs``).
    hold_logs: bool = True


class DeliveryConfig(ComponentConfig):
    """What the gateway layers around an exporter (``errorgate.delivery``): one attempt per
    ``timeout``, retries, the sending queue and the circuit breaker. An exporter whose settings
    extend this model exposes these keys; any other runs on these defaults."""

    timeout: Duration = 5.0
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)


def delivery_settings(config: ComponentConfig) -> DeliveryConfig:
    """An exporter's delivery settings: its own when it declares them, else the defaults."""
    return config if isinstance(config, DeliveryConfig) else DeliveryConfig()


# ---------------------------------------------------------------- incident engine (top-level ``incidents:``)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JiraConfig(_Strict):
    """Where P1 postmortems are filed (``incidents.jira``)."""

    url: str
    project: str = Field(min_length=1)
    token_env: str = "ERRORGATE_JIRA_TOKEN"  # a Jira API/personal access token, sent as Bearer
    issue_type: str = "Task"
    done_statuses: list[str] = Field(default_factory=lambda: ["Done", "Closed", "Resolved"])
    poll_interval: Duration = 60.0  # how often open postmortems are re-read (a Jira webhook is faster)
    # Secret of the Jira webhook (POST /api/v1/webhooks/jira): Jira Cloud signs with it
    # (X-Hub-Signature), Data Center sends it as ?token=; unset -> no webhook route.
    webhook_secret_env: str | None = None
    # How action items are linked to their postmortem (an issue link type name in Jira).
    action_link_type: str = Field(default="Relates", min_length=1)
    # Reviewer check (blame wording, personal names) before a postmortem is filed.
    review: bool = True


class PagerDutyConfig(_Strict):
    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key_env: str = "ERRORGATE_PAGERDUTY_ROUTING_KEY"
    webhook_secret_env: str | None = None  # v3 webhook signing secret: acks in PagerDuty stop escalation


class OpsgenieConfig(_Strict):
    url: str = "https://api.opsgenie.com"
    api_key_env: str = "ERRORGATE_OPSGENIE_API_KEY"
    # Shared token Opsgenie's outgoing webhook sends in X-Errorgate-Token: acks there stop escalation.
    webhook_token_env: str | None = None


class SlackConfig(_Strict):
    webhook_url_env: str = "ERRORGATE_SLACK_WEBHOOK_URL"


class SmtpConfig(_Strict):
    """E-mail pages (``incidents.escalation.smtp``); ``to`` maps the paged person to an address."""

    host: str
    port: int = Field(default=25, ge=1, le=65535)
    from_addr: str = Field(min_length=3)
    to: str = Field(
        default="{person}@example.com", description="address template; {person} is the on-call name"
    )
    starttls: bool = False
    username_env: str | None = None  # with password_env: SMTP AUTH after STARTTLS
    password_env: str | None = None


class PageRetryConfig(_Strict):
    """A page a channel refused is sent again (same dedup key, so the vendor keeps one alert):
    ``attempts`` deliveries in all, ``initial_interval`` apart, doubling up to ``max_interval``."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_interval: Duration = 30.0
    max_interval: Duration = 300.0


class EscalationDeliveryConfig(_Strict):
    """How pages leave the engine. A channel left out is not used."""

    check_interval: Duration = 5.0
    retry: PageRetryConfig = Field(default_factory=PageRetryConfig)
    pagerduty: PagerDutyConfig | None = None
    opsgenie: OpsgenieConfig | None = None
    slack: SlackConfig | None = None
    smtp: SmtpConfig | None = None


class GrafanaSilenceConfig(_Strict):
    """Grafana whose built-in Alertmanager gets the silences too (``incidents.silence.grafana``):
    Grafana-managed alerts have no inhibition, a silence is their only way to hold back."""

    url: str  # Grafana's base URL, e.g. https://grafana.example.com
    # A service-account token with silences:create/write, sent as Bearer; never logged.
    token_env: str = "GRAFANA_TOKEN"

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL of Grafana")
        return value


class SilenceConfig(_Strict):
    """Alert-fatigue control: while an incident spans ``min_services`` or more services, minor
    alerts of those services are silenced in this Alertmanager and/or Grafana."""

    alertmanager: str | None = None
    grafana: GrafanaSilenceConfig | None = None
    min_services: int = Field(default=2, ge=1)
    severities: list[Literal["P1", "P2", "P3", "P4"]] = Field(default=["P3", "P4"])
    token_env: str | None = None
    # Each silence lasts this long and is renewed at half-time: an engine that stops leaves
    # nothing silenced for longer.
    duration: Duration = 7200.0

    @model_validator(mode="after")
    def _a_target(self) -> SilenceConfig:
        if self.alertmanager is None and self.grafana is None:
            raise ValueError("name where to silence: alertmanager (a URL) and/or grafana ({url, token_env})")
        return self


class IncidentsConfig(_Strict):
    # Whether ``errorgate serve`` also runs the engine: None -> yes when the file has an
    # ``incidents:`` section (``errorgate incidents serve`` runs it either way).
    enabled: bool | None = None
    endpoint: str = "127.0.0.1:9466"
    token_env: str = "ERRORGATE_INCIDENTS_TOKEN"
    # SQLAlchemy URL; None -> SQLite at <service.data_dir>/incidents.db
    store: str | None = None
    oncall: str | None = None  # path of oncall.yaml; None -> the bundled governance/oncall.yaml
    catalog: str | None = None  # path of services.yaml; None -> the bundled one
    escalation: EscalationDeliveryConfig = Field(default_factory=EscalationDeliveryConfig)
    jira: JiraConfig | None = None
    silence: SilenceConfig | None = None
    # Ack/resolve/note links and the web page; the engine's own address when not set.
    public_url: str | None = None


# ---------------------------------------------------------------- high availability


class EtcdEndpointsConfig(_Strict):
    endpoints: list[str] = Field(min_length=1)  # client URLs, e.g. http://etcd-0:2379
    timeout: Duration = 2.0  # per request, before the next member is tried

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http(s) URL of an etcd client endpoint")
        return value


class HaConfig(_Strict):
    """Leader election for the singleton roles (rollback trigger, DLQ replay): ``errorgate.ha``."""

    etcd: EtcdEndpointsConfig
    lease_ttl: int = Field(default=3, ge=1, le=60)  # seconds: how fast a standby takes over
    prefix: str = Field(default="/errorgate", min_length=1)  # instances with one prefix elect one leader
    identity: str | None = None  # what the leader key holds; default host:pid


# ---------------------------------------------------------------- top level


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receivers: list[str] = Field(min_length=1)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(min_length=1)


class MetricsTelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = "127.0.0.1:9464"  # None disables the Prometheus/health endpoint
    label_caps: dict[str, int] = Field(default_factory=dict)


class LogsTelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    encoding: Literal["console", "json"] = "console"


class AgentCheckConfig(BaseModel):
    """HAProxy ``agent-check`` answers from per-service routing health (``errorgate.service.agent``)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = None  # e.g. 127.0.0.1:9467; None: no agent
    warn_weight: int = Field(default=50, ge=1, le=100)  # percent of its weight a ``warn`` service keeps
    fail: Literal["down", "drain"] = "down"  # drain: no new sessions, established ones finish


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metrics: MetricsTelemetryConfig = Field(default_factory=MetricsTelemetryConfig)
    logs: LogsTelemetryConfig = Field(default_factory=LogsTelemetryConfig)
    agent_check: AgentCheckConfig = Field(default_factory=AgentCheckConfig)


class ProcessorWorkerConfig(BaseModel):
    """Extension: run the processors in a worker process of their own, so the gateway uses a
    second core (see README "Architecture")."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # A batch the worker has not answered by then is dead-lettered and the worker restarted.
    timeout: Duration = 30.0

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value


class DiskConfig(BaseModel):
    """Extension: disk pressure as a state of its own. Below ``min_free_mib`` free on the
    filesystem of ``data_dir`` or of an exporter's ``sending_queue.storage``, new data is refused
    (UNAVAILABLE + RetryInfo / 503 + Retry-After), ``/readyz`` and gRPC health say fail, and it
    recovers by itself when space returns. The floor is the room that requests already accepted,
    held items and dead letters still need to be written safely."""

    model_config = ConfigDict(extra="forbid")
    min_free_mib: float = Field(default=64, ge=0)  # 0 turns the check off
    check_interval: Duration = 0.25  # free space is read at most this often (one statvfs per directory)


class DeadLetterConfig(BaseModel):
    """Extension: bounds of the dead-letter store; past them the oldest entries are removed,
    counted (``errorgate_dead_letter_expired_items_total``) and logged."""

    model_config = ConfigDict(extra="forbid")
    max_size_mib: float = Field(default=256, gt=0)
    max_age: Duration = 7 * 86400.0  # 0 = no age limit


class MemoryLimiterConfig(BaseModel):
    """Extension: the Collector's ``memory_limiter`` for errorgate's whole process tree. Above
    ``limit_mib - spike_limit_mib`` new data is refused (retryable) and /readyz fails; above
    ``limit_mib`` a garbage collection is forced too. 0 = derived: 80 % of the cgroup's memory
    limit (or of RAM), and 20 % of that as the spike allowance."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    limit_mib: float = Field(default=0, ge=0)
    spike_limit_mib: float = Field(default=0, ge=0)
    check_interval: Duration = 1.0

    @model_validator(mode="after")
    def _spike_below_limit(self) -> MemoryLimiterConfig:
        if self.limit_mib and self.spike_limit_mib >= self.limit_mib:
            raise ValueError(
                f"spike_limit_mib ({self.spike_limit_mib}) must be below limit_mib ({self.limit_mib})"
            )
        return self


class ServiceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipelines: dict[str, PipelineConfig]
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    data_dir: str = "./errorgate-data"  # extension: where queues, DLQ, keys and state live
    shutdown_timeout: Duration = 30.0  # extension: how long SIGTERM waits for the drain
    dedup_window: Duration = 300.0  # extension: re-sent identical batches within it are not forwarded twice
    # Extension: how often held items (tail sampling) are checked. Each poll releases what is due
    # in one burst that holds the pipeline lock; under load 50 ms halved p99 latency against
    # 200 ms (75 -> 40 ms in the benchmark) at the same throughput.
    poll_interval: Duration = 0.05
    processor_worker: ProcessorWorkerConfig = Field(default_factory=ProcessorWorkerConfig)
    # Extensions (shared services) enabled, by id under the top-level ``extensions:``.
    extensions: list[str] = Field(default_factory=list)
    disk: DiskConfig = Field(default_factory=DiskConfig)
    memory_limiter: MemoryLimiterConfig = Field(default_factory=MemoryLimiterConfig)
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    # Extension: trace assembly for pipelines with a processor that needs whole traces.
    assembly: AssemblyConfig = Field(default_factory=AssemblyConfig)

    @field_validator("pipelines")
    @classmethod
    def _pipeline_names(cls, value: dict[str, PipelineConfig]) -> dict[str, PipelineConfig]:
        for name in value:
            signal = component_type(name)
            if signal not in ("traces", "logs", "metrics"):
                raise ValueError(f"pipeline {name!r}: name must start with traces, logs or metrics")
        return value


class Config(BaseModel):
    """The validated file. Component sections are validated into their own models."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    receivers: dict[str, Any] = Field(default_factory=dict)
    processors: dict[str, Any] = Field(default_factory=dict)
    exporters: dict[str, Any] = Field(default_factory=dict)
    extensions: dict[str, Any] = Field(default_factory=dict)
    service: ServiceConfig
    # The incident engine (``errorgate incidents serve``); absent -> its defaults.
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    # Leader election on etcd; absent -> every instance acts alone (one instance only).
    ha: HaConfig | None = None
    source: str = "<embedded default>"
    # Per pipeline: the assembly settings that apply to it (``resolve_assembly``).
    _assembly: dict[str, AssemblyConfig] = PrivateAttr(default_factory=dict)

    def assembly_for(self, pipeline: str) -> AssemblyConfig:
        """The trace assembly settings of ``pipeline`` (``service.assembly`` with what its
        processors set)."""
        return self._assembly.get(pipeline, self.service.assembly)

    def enabled_extensions(self) -> dict[str, ComponentConfig]:
        """The validated settings of every extension ``service.extensions`` enables, by id."""
        return {eid: self.extensions[eid] for eid in self.service.extensions}


# ---------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {name} is not set and ${{env:{name}}} has no default (:-value)"
        )

    lines = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        lines.append(line if stripped.startswith("#") else _ENV.sub(repl, line))
    return "".join(lines)


def rules_sha256(config: Config) -> str:
    """Hash of every processor's validated settings: the "rules" a ``rules_change`` audit event
    tracks (the gateway at start-up and the governance commands compute it the same way)."""
    rules = {cid: cfg.model_dump(mode="json") for cid, cfg in sorted(config.processors.items())}
    return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()


def default_config_text() -> str:
    return resources.files("errorgate").joinpath("default_config.yaml").read_text(encoding="utf-8")


def load_config(path: str | Path | None = None) -> Config:
    """Load and fully validate a config file (or the embedded default when ``path`` is None)."""
    if path is None:
        text, source = default_config_text(), "<embedded default>"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
        source = str(p)
    return parse_config(text, source)


def parse_config(text: str, source: str = "<string>") -> Config:
    try:
        raw = yaml.safe_load(substitute_env(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping with receivers, processors, exporters, service"
        )
    try:
        config = Config.model_validate({**raw, "source": source})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e)) from None
    _validate_components(config)
    _resolve_extensions(config)
    _resolve_assembly(config)
    return config


def format_validation_error(e: ValidationError, prefix: str = "") -> str:
    msgs = []
    for err in e.errors():
        path = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(err["loc"]) if str(p))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        msgs.append(f"{path}: {msg}" if path else msg)
    return "; ".join(msgs)


def _validate_components(config: Config) -> None:
    registries: dict[str, Registry[Any]] = {
        "receivers": RECEIVERS,
        "processors": PROCESSORS,
        "exporters": EXPORTERS,
        "extensions": EXTENSIONS,
    }
    for kind, registry in registries.items():
        section: dict[str, Any] = getattr(config, kind)
        for component_id, settings in list(section.items()):
            type_name = component_type(component_id)
            factory = registry.get(type_name)
            if factory is None:
                known = ", ".join(registry.names()) or "none"
                raise ConfigError(
                    f"{kind}.{component_id}: unknown {registry.kind} type {type_name!r} (known: {known})"
                )
            if settings is not None and not isinstance(settings, dict):
                raise ConfigError(
                    f"{kind}.{component_id}: expected a mapping of settings, got {type(settings).__name__}"
                )
            try:
                section[component_id] = factory.config_model.model_validate(settings or {})
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, f"{kind}.{component_id}")) from None
    for name, pipeline in config.service.pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            declared = getattr(config, kind)
            for i, component_id in enumerate(getattr(pipeline, kind)):
                if component_id not in declared:
                    raise ConfigError(
                        f"service.pipelines.{name}.{kind}[{i}]: {component_id!r} is not defined under {kind}:"
                    )
            ids = getattr(pipeline, kind)
            if len(set(ids)) != len(ids):
                raise ConfigError(f"service.pipelines.{name}.{kind}: lists a component twice")


def _resolve_extensions(config: Config) -> None:
    """Extensions a component's settings imply (the keyring an ``encrypt`` section describes) are
    added, enabled, when the file declares none of that id; then every enabled id must exist."""
    for settings in config.processors.values():
        for extension_id, implied in settings.implied_extensions().items():
            if extension_id not in config.extensions:
                config.extensions[extension_id] = implied
                config.service.extensions.append(extension_id)
    for i, extension_id in enumerate(config.service.extensions):
        if extension_id not in config.extensions:
            raise ConfigError(f"service.extensions[{i}]: {extension_id!r} is not defined under extensions:")
    if len(set(config.service.extensions)) != len(config.service.extensions):
        raise ConfigError("service.extensions: lists an extension twice")


def _resolve_assembly(config: Config) -> None:
    """Each pipeline's assembly settings: ``service.assembly``, with the assembly keys its
    processors set (``sample.decision_wait``...). A key set in two places to different values
    is an error naming both, rather than one silently winning."""
    base = config.service.assembly
    for name, pipeline in config.service.pipelines.items():
        merged = {key: getattr(base, key) for key in AssemblyConfig.model_fields}
        origin = {key: "service.assembly" for key in base.model_fields_set}
        for component_id in pipeline.processors:
            settings = config.processors[component_id]
            if not isinstance(settings, AssemblyConfig):
                continue
            for key in sorted(settings.model_fields_set & set(AssemblyConfig.model_fields)):
                value = getattr(settings, key)
                if key in origin and merged[key] != value:
                    raise ConfigError(
                        f"processors.{component_id}.{key}: {value!r} conflicts with {origin[key]}.{key} "
                        f"({merged[key]!r}) for pipeline {name}; set it in one place"
                    )
                merged[key], origin[key] = value, f"processors.{component_id}"
        config._assembly[name] = AssemblyConfig(**merged)


def needs_whole_traces(config: Config, processor_ids: list[str]) -> bool:
    """Whether any of these processors declares that it needs whole traces."""
    for component_id in processor_ids:
        factory = PROCESSORS.get(component_type(component_id))
        if factory is not None and processor_capabilities(factory).needs_whole_traces:
            return True
    return False
