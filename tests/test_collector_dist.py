"""errorgate's OpenTelemetry Collector distribution (``make collector``): built from one
manifest at one release, it carries the components the docs promise, and every Collector
config in collector-config/ passes the real Collector's ``validate``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.collector import PEERS
from bench.collector import config as bench_config
from tests.support.otelcol import otelcol_binary, validate
from tests.support.otlp_sink import OtlpSink
from tests.support.topology import agent_yaml, collector_gateway_yaml

ROOT = Path(__file__).resolve().parents[1]
CC = ROOT / "collector-config"
MANIFEST = CC / "otelcol" / "builder.yaml"

# Every YAML file in collector-config/ is either a Collector config (validated below) or named
# here with what it is instead, so a new Collector config cannot slip past `validate`.
NOT_COLLECTOR = {
    "docker-compose.yaml": "the compose stack",
    "errorgate.yaml": "errorgate's own config (tests/test_collector_config.py loads it)",
    "tempo.yaml": "Tempo's config",
}
COLLECTOR_CONFIGS = sorted(
    p.name for p in CC.glob("*.yaml") if p.name not in NOT_COLLECTOR and p.parent == CC
)

# What collector-config/*.yaml, the topology tests and `make bench` need from the distribution.
REQUIRED = {
    "receivers": {"otlp"},
    "processors": {
        "batch",
        "memory_limiter",
        "redaction",
        "tail_sampling",
        "probabilistic_sampler",
        "resourcedetection",
    },
    # `otlp` and `otlphttp` are v0.148's deprecated aliases of otlp_grpc / otlp_http, which
    # `components` does not list; the configs validated below and the topology tests use them.
    "exporters": {"debug", "loadbalancing", "prometheusremotewrite"},
    "connectors": {"routing"},
    "extensions": {"health_check"},
}


def test_manifest_pins_every_module_at_one_release() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    modules = [entry["gomod"] for kind in REQUIRED.keys() | {"providers"} for entry in manifest.get(kind, [])]
    versions = {m.split()[1] for m in modules}
    # Core's stable modules (confmap providers) are versioned v1.x beside the v0.x release;
    # v0.148.0 goes with v1.54.0.
    assert versions <= {"v0.148.0", "v1.54.0"}, versions
    assert manifest["dist"]["name"] == "otelcol-errorgate"


def test_distribution_has_the_promised_components() -> None:
    out = subprocess.run(
        [str(otelcol_binary()), "components"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    listed = yaml.safe_load(out)
    for kind, wanted in REQUIRED.items():
        names = {c["name"] for c in listed.get(kind) or []}
        assert wanted <= names, f"{kind}: missing {sorted(wanted - names)}"
    assert re.search(r"version: 0\.148\.0", out)


def test_every_collector_config_is_named() -> None:
    assert COLLECTOR_CONFIGS == ["agent.yaml", "gateway.yaml", "loadbalanced.yaml", "retention-routing.yaml"]


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_collector_config_passes_validate(name: str) -> None:
    result = validate(CC / name)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("peer", PEERS)
def test_bench_peer_configs_pass_validate(peer: str, tmp_path: Path) -> None:
    cfg = tmp_path / f"{peer}.yaml"
    cfg.write_text(bench_config(peer, 4317, 4318, 13133))
    result = validate(cfg)
    assert result.returncode == 0, result.stderr[-3000:]


def test_topology_configs_pass_validate(tmp_path: Path) -> None:
    sink = OtlpSink()  # not started: only its address goes into the config
    for name, text in {
        "gateway": collector_gateway_yaml(4317, 13133, sink),
        "agent-lb": agent_yaml(4317, 13133, ["127.0.0.1:5001", "127.0.0.1:5002"], loadbalancing=True),
        "agent": agent_yaml(4317, 13133, ["127.0.0.1:5001"], loadbalancing=False),
    }.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        result = validate(tmp_path / f"{name}.yaml")
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"


def test_validate_rejects_a_broken_config(tmp_path: Path) -> None:
    """The check above has teeth: an unknown component fails `validate`."""
    cfg = yaml.safe_load((CC / "gateway.yaml").read_text())
    cfg["service"]["pipelines"]["traces"]["exporters"] = ["otlp/nowhere"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(cfg))
    result = validate(broken)
    assert result.returncode != 0
    assert "otlp/nowhere" in result.stderr


def test_make_collector_reuses_the_build_until_the_manifest_changes(tmp_path: Path) -> None:
    """`make collector` is a no-op while the binary was built from this manifest (the stamp is
    keyed on its hash); an edited manifest makes it rebuild. `make -q` asks without building."""
    cache = otelcol_binary().parents[1]
    same = subprocess.run(
        ["make", "-q", "collector", f"COLLECTOR_CACHE={cache}"], cwd=ROOT, capture_output=True, check=False
    )
    assert same.returncode == 0, same.stdout
    # A fresh clone's manifest is newer than the cached build: the same content must not rebuild.
    fresh = tmp_path / "fresh-clone-builder.yaml"
    fresh.write_text(MANIFEST.read_text())
    cloned = subprocess.run(
        ["make", "-q", "collector", f"COLLECTOR_CACHE={cache}", f"OTELCOL_MANIFEST={fresh}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert cloned.returncode == 0, cloned.stdout
    edited = tmp_path / "builder.yaml"
    edited.write_text(MANIFEST.read_text() + "# an edit\n")
    changed = subprocess.run(
        ["make", "-q", "collector", f"COLLECTOR_CACHE={cache}", f"OTELCOL_MANIFEST={edited}"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert changed.returncode == 1
