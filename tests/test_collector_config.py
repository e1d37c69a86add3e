"""collector-config/: the Collector configs, docker-compose.yaml and the files it mounts agree
on host names, ports and paths with each other and with errorgate's own defaults.
(docker compose and the Collector binary cannot run here; these checks stand in.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from errorgate.config import MetricsTelemetryConfig, parse_config
from errorgate.receiver import GrpcProtocolConfig, HttpProtocolConfig

ROOT = Path(__file__).resolve().parents[1]
CC = ROOT / "collector-config"
COLLECTOR_CONFIGS = ["agent.yaml", "gateway.yaml", "loadbalanced.yaml", "retention-routing.yaml"]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CC / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load("docker-compose.yaml")


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].split("/")[0])


def _host(endpoint: str) -> str:
    return re.sub(r"^https?://", "", endpoint).rsplit(":", 1)[0]


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path (relative to collector-config/), env defaults resolved."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2] if not volume.startswith("${") else _env_volume(volume)
        if source.startswith((".", "/")):
            out[target] = (CC / source).resolve()
    return out


def _env_volume(volume: str) -> list[str]:
    m = re.match(r"\$\{\w+:-([^}]+)\}:([^:]+)", volume)
    assert m, volume
    return [m.group(1), m.group(2)]


def _container_file(service: dict[str, Any], container_path: str) -> Path:
    """The host file that appears at ``container_path`` inside the service's container."""
    for target, source in sorted(_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target:
            return source
        if container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target.rstrip("/")) + 1 :]
    raise AssertionError(f"{container_path} is not mounted")


def _published(service: dict[str, Any]) -> set[int]:
    return {int(p.split(":")[-1].strip('"')) for p in service.get("ports", [])}


def _listening(service: dict[str, Any]) -> set[int]:
    return _published(service) | {int(p) for p in service.get("expose", [])}


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_pipelines_reference_defined_components(name: str) -> None:
    cfg = _load(name)
    assert "#" in (CC / name).read_text().split("\n", 1)[0], "each config starts with an explanatory comment"
    connectors = set(cfg.get("connectors", {}))
    for pname, pipeline in cfg["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            defined = set(cfg.get(kind, {})) | (connectors if kind != "processors" else set())
            for component in pipeline.get(kind, []):
                assert component in defined, f"{name}: pipelines.{pname}.{kind}: {component} undefined"
        assert pipeline["exporters"], f"{name}: {pname} exports nowhere"
    for ext in cfg["service"].get("extensions", []):
        assert ext in cfg.get("extensions", {})
    # every connector is both the exporter of one pipeline and the receiver of another
    for connector in connectors:
        pipelines = cfg["service"]["pipelines"].values()
        assert any(connector in p.get("exporters", []) for p in pipelines)
        assert any(connector in p.get("receivers", []) for p in pipelines)


def test_agent_sends_to_errorgate_on_its_default_port(compose: dict[str, Any]) -> None:
    agent = _load("agent.yaml")
    grpc_default = GrpcProtocolConfig().endpoint
    assert _port(grpc_default) == 4317 and _port(HttpProtocolConfig().endpoint) == 4318
    endpoint = agent["exporters"]["otlp/errorgate"]["endpoint"]
    assert _host(endpoint) == "errorgate" and "errorgate" in compose["services"]
    assert _port(endpoint) == _port(grpc_default)
    eg = _load("errorgate.yaml")
    assert _port(eg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == _port(endpoint)
    assert _port(eg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]) == 4318
    assert {4317, 4318} <= _listening(compose["services"]["errorgate"])
    # the agent is where services send: it publishes the standard OTLP ports
    assert _published(compose["services"]["collector-agent"]) == {4317, 4318}
    protocols = agent["receivers"]["otlp"]["protocols"]
    assert _port(protocols["grpc"]["endpoint"]) == 4317 and _port(protocols["http"]["endpoint"]) == 4318


def test_errorgate_config_is_valid_and_forwards_to_the_gateway(compose: dict[str, Any]) -> None:
    config = parse_config((CC / "errorgate.yaml").read_text(), "collector-config/errorgate.yaml")
    endpoint = config.exporters["otlp"].endpoint
    assert _host(endpoint) == "collector-gateway" and "collector-gateway" in compose["services"]
    gateway = _load("gateway.yaml")
    assert _port(gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == _port(endpoint)
    assert _port(endpoint) in _listening(compose["services"]["collector-gateway"])
    # metrics on errorgate's default port, scraped by Prometheus at that port
    default_metrics = MetricsTelemetryConfig().endpoint
    assert default_metrics is not None and _port(default_metrics) == 9464
    assert _port(config.service.telemetry.metrics.endpoint or "") == 9464
    assert 9464 in _listening(compose["services"]["errorgate"])
    prom = _load("prometheus.yml")
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "errorgate")
    assert job["dns_sd_configs"] == [{"names": ["errorgate"], "type": "A", "port": 9464}]
    # the config the compose file mounts is this file, at the path the command names
    service = compose["services"]["errorgate"]
    config_path = service["command"][service["command"].index("--config") + 1]
    assert _container_file(service, config_path) == (CC / "errorgate.yaml").resolve()
    assert config.service.data_dir in _mounts_named_volumes(service)


def _mounts_named_volumes(service: dict[str, Any]) -> set[str]:
    return {v.split(":")[1] for v in service.get("volumes", []) if not v.startswith((".", "/", "$"))}


def test_gateway_exports_to_backends_defined_in_compose(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("gateway.yaml", "retention-routing.yaml"):
        for exporter_id, exporter in _load(name)["exporters"].items():
            host = _host(exporter["endpoint"].removesuffix("/otlp").removesuffix("/api/v1/write"))
            assert host in services, f"{name}: exporters.{exporter_id}: {host} is not a compose service"
            assert _port(exporter["endpoint"].split("//")[-1].split("/")[0]) in _listening(services[host]), (
                exporter_id
            )
    tempo = _load("tempo.yaml")
    assert _port(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == 4317
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]


def test_loadbalancing_routes_whole_traces_to_one_errorgate_replica() -> None:
    lb = _load("loadbalanced.yaml")
    exporter = lb["exporters"]["loadbalancing/errorgate"]
    assert exporter["routing_key"] == "traceID"
    assert exporter["resolver"]["dns"] == {"hostname": "errorgate", "port": "4317", "interval": "5s"}
    assert lb["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing/errorgate"]
    # Re-routing when a replica dies: queue and retry on the balancer, per replica fail fast
    # (a per-endpoint queue is dropped with its endpoint: tests/test_collector_reroute.py).
    assert exporter["retry_on_failure"]["max_elapsed_time"] == "0s"
    assert exporter["sending_queue"]["enabled"] is True
    assert exporter["protocol"]["otlp"]["sending_queue"] == {"enabled": False}
    assert exporter["protocol"]["otlp"]["retry_on_failure"] == {"enabled": False}


def test_retention_routing_covers_every_retention_class() -> None:
    policy = yaml.safe_load((ROOT / "governance" / "retention.yaml").read_text())
    classes = set(policy["classes"])
    cfg = _load("retention-routing.yaml")
    for signal, context in (("traces", "span"), ("logs", "log")):
        connector = cfg["connectors"][f"routing/{signal}"]
        routed = {}
        for row in connector["table"]:
            assert row["context"] == context
            m = re.fullmatch(
                r'attributes\["errorgate\.retention\.class"\] == "([a-z0-9-]+)"', row["condition"]
            )
            assert m, row["condition"]
            routed[m.group(1)] = row["pipelines"]
        assert connector["default_pipelines"] == [f"{signal}/{policy['default_class']}"]
        assert set(routed) | {policy["default_class"]} == classes
        for cls in classes:
            pipeline = cfg["service"]["pipelines"][f"{signal}/{cls}"]
            [exporter] = pipeline["exporters"]
            assert cfg["exporters"][exporter]["headers"]["X-Scope-OrgID"] == f"retention-{cls}"


def test_compose_mounts_exist_and_match_what_the_configs_reference(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, source in _mounts(service).items():
            if source.name == "secrets":
                continue  # created by the user (see the comment at the top of docker-compose.yaml)
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    agent = services["collector-agent"]
    assert _container_file(agent, "/etc/otelcol-contrib/config.yaml") == (CC / "agent.yaml").resolve()
    assert (
        _container_file(services["collector-gateway"], "/etc/otelcol-contrib/config.yaml")
        == (CC / "gateway.yaml").resolve()
    )

    prom = services["prometheus"]
    prom_cfg = _load("prometheus.yml")
    [rule_glob] = prom_cfg["rule_files"]
    rules_dir = _container_file(prom, rule_glob.rsplit("/", 1)[0])
    assert len(list(rules_dir.glob(rule_glob.rsplit("/", 1)[1]))) == 3
    [am_target] = prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert _host(am_target) == "alertmanager" and _port(am_target) in _listening(services["alertmanager"])

    am = services["alertmanager"]
    am_file = _container_file(am, "/etc/alertmanager/alertmanager.yml")
    am_cfg = yaml.safe_load(am_file.read_text())
    for template in am_cfg["templates"]:
        assert _container_file(am, f"/etc/alertmanager/{template}").exists()
    secrets_dir = str(Path(am_cfg["global"]["slack_api_url_file"]).parent)
    assert _container_file(am, secrets_dir).name == "secrets"

    grafana = services["grafana"]
    assert _container_file(grafana, "/etc/grafana/provisioning/alerting") == (
        ROOT / "alert_rules" / "grafana"
    )
    contact_points = (ROOT / "alert_rules" / "grafana" / "contact-points.yaml").read_text()
    for path in set(re.findall(r"\$__file\{([^}]+)\}", contact_points)):
        assert _container_file(grafana, path).parent.name == "secrets", path
    provider = yaml.safe_load(
        _container_file(grafana, "/etc/grafana/provisioning/dashboards/errorgate.yaml").read_text()
    )
    dash_dir = _container_file(grafana, provider["providers"][0]["options"]["path"])
    assert list(dash_dir.glob("*.json")), "dashboards are mounted where the provider looks"
    datasources = yaml.safe_load(
        _container_file(grafana, "/etc/grafana/provisioning/datasources/errorgate.yaml").read_text()
    )
    policy = yaml.safe_load((ROOT / "alert_rules" / "policy.yaml").read_text())
    assert policy["grafana"]["datasource_uid"] in {d["uid"] for d in datasources["datasources"]}
    for ds in datasources["datasources"]:
        assert _host(ds["url"]) in services and _port(ds["url"]) in _listening(services[_host(ds["url"])])


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool missing")
def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(CC / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
