"""``errorgate lineage``: the document follows the config, in Markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from errorgate.cli import main

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:0"}
processors:
  sample: {}
  encrypt:
    rules:
      - {services: ["checkout"], keys: ["user.email", "log.body"], signals: [logs]}
  retention: {}
exporters:
  otlp:
    endpoint: collector.internal:4317
    headers: {authorization: "Bearer TOPSECRET-TOKEN"}
    sending_queue: {storage: %(data)s/queue}
  file: {path: %(data)s/out}
service:
  data_dir: %(data)s
  pipelines:
    logs: {receivers: [otlp], processors: [sample, encrypt, retention], exporters: [otlp, file]}
    metrics: {receivers: [otlp], processors: [], exporters: [file]}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "errorgate.yaml"
    path.write_text(CONFIG % {"data": tmp_path / "data"})
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_lineage_follows_the_config(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = run(capsys, "lineage", "--config", str(config_file), "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["source"] == str(config_file)
    assert doc["at_rest"]["encrypted"] is True and doc["at_rest"]["keyring"] == f"{tmp_path / 'data'}/keys"
    logs, metrics = doc["pipelines"]
    assert (logs["name"], logs["signal"], logs["receivers"]) == ("logs", "logs", ["otlp"])
    assert any("log record body" in f for f in logs["fields_in"])
    assert [(p["id"], p["role"]) for p in logs["processors"]] == [
        ("sample", "reads, drops, adds"),
        ("encrypt", "encrypts"),
        ("retention", "reads, adds"),
    ]
    [encrypt_line] = logs["processors"][1]["description"]
    assert "user.email, log.body" in encrypt_line and "checkout" in encrypt_line and "(logs)" in encrypt_line
    otlp, file_ = logs["exporters"]
    assert otlp["destination"] == "OTLP/grpc to collector.internal:4317 (TLS)"
    assert (
        otlp["buffering"]
        == f"persistent queue at {tmp_path / 'data'}/queue, encrypted at rest (AES-256-GCM-SIV)"
    )
    assert file_["destination"].startswith("OTLP/JSON files under")
    assert logs["retention"]["default_class"] and logs["retention"]["classes"]
    assert all(isinstance(days, int) for days in logs["retention"]["classes"].values())
    assert logs["unredacted"] is True
    assert metrics["processors"] == [] and metrics["retention"] is None
    assert any("data point" in f for f in metrics["fields_in"])
    assert "TOPSECRET" not in out


def test_markdown_lineage(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "lineage", "--config", str(config_file))
    assert rc == 0
    assert out.startswith("# errorgate data lineage")
    assert "## Pipeline `logs` (logs)" in out and "## Pipeline `metrics` (metrics)" in out
    assert "1. `sample` (reads, drops, adds)" in out and "2. `encrypt` (encrypts)" in out
    assert "No `redact` processor: strings leave this pipeline unredacted." in out
    assert "- no `retention` processor: items carry no retention class" in out
    from errorgate.processors.retention import load_policy

    for name, cls in load_policy().classes.items():
        assert f"`{name}` ({cls.days} days)" in out
    assert "TOPSECRET" not in out


def test_without_encrypt_at_rest_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
        "exporters: {otlp: {endpoint: 'c:4317', sending_queue: {storage: ./q}}}\n"
        "service: {pipelines: {traces: {receivers: [otlp], exporters: [otlp]}}}\n"
    )
    rc, out, _ = run(capsys, "lineage", "--config", str(path), "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["at_rest"]["encrypted"] is False
    assert (
        doc["pipelines"][0]["exporters"][0]["buffering"] == "persistent queue at ./q, NOT encrypted at rest"
    )
    rc, out, _ = run(capsys, "lineage", "--config", str(path))
    assert "**not encrypted**" in out


def test_invalid_config_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: '127.0.0.1:0'}}}}\n"
        "processors: {encrypt: {rulez: []}}\n"
        "exporters: {file: {path: ./out}}\n"
        "service: {pipelines: {traces: {receivers: [otlp], processors: [encrypt], exporters: [file]}}}\n"
    )
    rc, out, err = run(capsys, "lineage", "--config", str(path))
    assert rc != 0 and out == "" and "processors.encrypt.rulez: unknown key" in err
    assert len(err.strip().splitlines()) == 1


def test_default_config_lineage(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "lineage", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and {p["signal"] for p in doc["pipelines"]} == {"traces", "logs", "metrics"}
