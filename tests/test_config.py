"""Configuration: the Collector's shape, env substitution, and errors that name the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from errorgate.config import ConfigError, load_config, parse_config, parse_duration

BASE = """
receivers:
  otlp: {}
exporters:
  file: {path: /tmp/x}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
"""


def test_embedded_default_is_valid_and_listens_on_localhost() -> None:
    config = load_config(None)
    grpc = config.receivers["otlp"].protocols.grpc
    http = config.receivers["otlp"].protocols.http
    assert grpc.endpoint == "127.0.0.1:4317" and http.endpoint == "127.0.0.1:4318"
    assert config.service.telemetry.metrics.endpoint == "127.0.0.1:9464"
    assert set(config.service.pipelines) == {"traces", "logs", "metrics"}


def test_empty_component_settings_use_defaults() -> None:
    config = parse_config(BASE)
    assert config.receivers["otlp"].protocols.grpc.max_recv_msg_size_mib == 16


def test_receiver_hardening_defaults_and_durations() -> None:
    otlp = parse_config(BASE).receivers["otlp"]
    limits = otlp.limits
    assert (limits.max_items_per_request, limits.max_resources_per_request) == (100_000, 20_000)
    assert (limits.max_scopes_per_request, limits.max_json_depth) == (20_000, 64)
    http, grpc = otlp.protocols.http, otlp.protocols.grpc
    assert (http.read_header_timeout, http.read_timeout, http.max_connections) == (10.0, 10.0, 256)
    assert (grpc.max_connections, grpc.handshake_timeout, grpc.max_connection_idle) == (1024, 10.0, 300.0)
    text = BASE.replace(
        "otlp: {}",
        "otlp: {protocols: {http: {read_timeout: 1m30s, read_header_timeout: 500ms}, "
        "grpc: {max_connection_idle: 1h}}, limits: {max_items_per_request: 5000}}",
    )
    otlp = parse_config(text).receivers["otlp"]
    assert (otlp.protocols.http.read_timeout, otlp.protocols.http.read_header_timeout) == (90.0, 0.5)
    assert otlp.protocols.grpc.max_connection_idle == 3600.0
    assert otlp.limits.max_items_per_request == 5000


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (BASE.replace("otlp: {}", "otlp: {protocols: {grpc: {endpoint: x, bogus: 1}}}"),
         "receivers.otlp.protocols.grpc.bogus: unknown key"),
        (BASE.replace("file: {path: /tmp/x}", "file: {path: /tmp/x, rotation: {max_megabytes: -1}}"),
         "exporters.file.rotation.max_megabytes"),
        (BASE.replace("exporters: [file]", "exporters: [otlp/missing]"),
         "service.pipelines.traces.exporters[0]: 'otlp/missing' is not defined under exporters:"),
        (BASE.replace("file: {path: /tmp/x}", "kafka: {}"), "exporters.kafka: unknown exporter type 'kafka'"),
        (BASE.replace("traces: {", "spans: {"), "service.pipelines: Value error, pipeline 'spans'"),
        (BASE + "  data_dri: ./x\n", "service.data_dri: unknown key"),
        (BASE + "extra_top: 1\n", "extra_top: unknown key"),
        (BASE.replace("otlp: {}", "otlp: [1, 2]"), "receivers.otlp: expected a mapping"),
        (BASE.replace("otlp: {}", "otlp: {limits: {max_items_per_request: 0}}"),
         "receivers.otlp.limits.max_items_per_request"),
        (BASE.replace("otlp: {}", "otlp: {limits: {max_json_depth: 500}}"),
         "receivers.otlp.limits.max_json_depth"),
        (BASE.replace("otlp: {}", "otlp: {limits: {max_spans: 5}}"), "receivers.otlp.limits.max_spans: unknown key"),
        (BASE.replace("otlp: {}", "otlp: {protocols: {http: {read_timeout: soon}}}"),
         "receivers.otlp.protocols.http.read_timeout"),
        (BASE.replace("otlp: {}", "otlp: {protocols: {http: {max_connections: 0}}}"),
         "receivers.otlp.protocols.http.max_connections"),
        (BASE.replace("otlp: {}", "otlp: {protocols: {grpc: {handshake_timeout: 0s}}}"),
         "receivers.otlp.protocols.grpc.handshake_timeout"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml_text)
    assert expected in str(err.value)


def test_env_substitution_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE.replace("/tmp/x", "${env:OUT_DIR:-/tmp/default}").replace(
        "otlp: {}", "otlp: {protocols: {grpc: {endpoint: '${env:GRPC_EP}'}}}"
    )
    monkeypatch.setenv("GRPC_EP", "127.0.0.1:5555")
    monkeypatch.delenv("OUT_DIR", raising=False)
    config = parse_config(text)
    assert config.receivers["otlp"].protocols.grpc.endpoint == "127.0.0.1:5555"
    assert config.exporters["file"].path == "/tmp/default"
    monkeypatch.delenv("GRPC_EP")
    with pytest.raises(ConfigError, match="GRPC_EP is not set"):
        parse_config(text)


def test_invalid_yaml_reports_line() -> None:
    with pytest.raises(ConfigError, match="line 3"):
        parse_config("receivers:\n  otlp: {}\n  bad: x: y\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("5s", 5), ("1m", 60), ("1h30m", 5400), (2, 2.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_names_key() -> None:
    text = BASE + "  shutdown_timeout: soon\n"
    with pytest.raises(ConfigError, match=r"service.shutdown_timeout: .*duration"):
        parse_config(text)


def test_validate_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("otlp: {}", "otlp: {nope: 1}"))
    ok = subprocess.run(
        [sys.executable, "-m", "errorgate", "validate-config", str(good)], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "valid" in ok.stdout
    ko = subprocess.run(
        [sys.executable, "-m", "errorgate", "validate-config", str(bad)], capture_output=True, text=True
    )
    assert ko.returncode != 0
    assert ko.stderr.strip().count("\n") == 0, "failures are one line"
    assert "receivers.otlp.nope: unknown key" in ko.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "errorgate", "validate-config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "cannot read config file" in missing.stderr


def test_every_command_has_help() -> None:
    from errorgate.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = sorted(sub.choices)  # type: ignore[union-attr]
    assert {"serve", "validate-config", "demo"} <= set(names)
    for name in names:
        out = subprocess.run(
            [sys.executable, "-m", "errorgate", name, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0 and "usage:" in out.stdout, name


def test_readme_annotated_example_is_a_valid_config() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A complete, annotated example:", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = parse_config(block, "README.md")
    assert config.service.pipelines["traces"].processors == [
        "classify",
        "sample",
        "redact",
        "encrypt",
        "retention",
    ]
    assert config.exporters["otlp"].sending_queue.max_size_mib == 512


def test_readme_processor_examples_are_valid() -> None:
    """Each processor's YAML block in the README is accepted as that processor's settings."""
    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    checked = []
    for name in ("classify", "sample", "retention", "redact", "encrypt"):
        section = readme.split(f"### {name}\n", 1)[1]
        block = section.split("```yaml", 1)[1].split("```", 1)[0]
        settings = yaml.safe_load(block)[name]
        config = yaml.safe_load(BASE)
        config["processors"] = {name: settings}
        config["service"]["pipelines"]["traces"]["processors"] = [name]
        text = yaml.safe_dump(config)
        parse_config(text, f"README {name}")
        checked.append(name)
    assert checked == ["classify", "sample", "retention", "redact", "encrypt"]


def test_readme_classify_block_shows_the_defaults() -> None:
    """The README's classify block says what you get without configuring anything: copying it
    must not change behaviour (a rule's urgency left out once made slow burns urgent)."""
    import yaml

    from errorgate.processors.classification.metrics import DEFAULT_LABEL_CAPS
    from errorgate.processors.classification.settings import ClassifyConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### classify\n", 1)[1]
    block = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])["classify"]
    # label_caps: {} means "the default caps"; the README spells them out.
    assert block["metrics"].pop("label_caps") == DEFAULT_LABEL_CAPS
    assert ClassifyConfig.model_validate(block) == ClassifyConfig()


def test_readme_sample_block_shows_the_defaults() -> None:
    """The README's sample block gives the defaults, but for the two keys it shows by example."""
    import yaml

    from errorgate.config import AssemblyConfig
    from errorgate.processors.sampling.config import SampleConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### sample\n", 1)[1]
    block = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])["sample"]
    examples = {"attribute_rules", "logs"}
    documented = SampleConfig.model_validate({k: v for k, v in block.items() if k not in examples})
    assert documented == SampleConfig()
    # The assembly keys it documents are service.assembly's too, with the same defaults.
    assert {k: getattr(documented, k) for k in AssemblyConfig.model_fields} == AssemblyConfig().model_dump()
