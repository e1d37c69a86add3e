"""``errorgate rules audit`` / ``rules test`` as a user runs them (the real CLI entry point)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from errorgate.cli import main

ROOT = Path(__file__).resolve().parent.parent

HIPAA_CONFIG = """
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}
processors:
  redact:
    packs: [secrets, pci, gdpr, hipaa]
    entities: {MEDICAL_RECORD_NUMBER: {action: mask}, HEALTH_PLAN_ID: {action: mask}}
    block_keys: [x.internal.ref]
exporters: {file: {path: ./out}}
service:
  pipelines:
    logs: {receivers: [otlp], processors: [redact], exporters: [file]}
"""


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_audit_text_shows_policy_and_gaps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["rules", "audit"], capsys)
    assert code == 0
    assert "CardRecognizer" in out and "CREDIT_CARD              partial" in out
    assert "*password*" in out and "service.name" in out
    assert "GDPR   covered" in out  # national ids: NationalIdRecognizer
    assert "PCI    covered" in out
    # hipaa is not in the default packs: its regime shows as not enabled, with what nothing covers.
    assert (
        "HIPAA  NOT ENABLED (pack hipaa); uncovered: DEVICE_SERIAL_NUMBER, HEALTH_PLAN_ID, MEDICAL_RECORD_NUMBER"
        in out
    )


def test_audit_json_with_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(HIPAA_CONFIG)
    code, out, _ = run_cli(["rules", "audit", "--format", "json", "--config", str(cfg)], capsys)
    assert code == 0
    inst = json.loads(out)["redact"][0]
    assert [p["name"] for p in inst["packs"]] == ["secrets", "pci", "gdpr", "hipaa"]
    assert inst["regimes"]["HIPAA"] == {"gaps": [], "covered": True}
    assert inst["regimes"]["PCI"]["covered"] is True
    assert inst["regimes_not_enabled"] == {}
    assert inst["actions"]["MEDICAL_RECORD_NUMBER"] == "mask"
    assert "x.internal.ref" in inst["block_keys"]
    mrn = next(c for c in inst["custom_recognizers"] if c["name"] == "mrn_labelled")
    assert mrn["context"] == ["patient", "mrn", "medical"]


LINES = (
    "login failed for jane.doe@example.com\npayment card 5555 5555 5555 4444 declined\ncache warmed in 35ms\n"
)


def test_rules_test_masks_values_unless_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = tmp_path / "lines.txt"
    sample.write_text(LINES)
    code, out, _ = run_cli(["rules", "test", str(sample)], capsys)
    assert code == 0
    assert "jane.doe@example.com" not in out and "5555 5555 5555 4444" not in out
    assert "xxxx.xxx@xxxxxxx.xxx -> <EMAIL_ADDRESS>" in out
    assert "9999 9999 9999 9999 -> ************4444" in out
    assert "TelemetryEmailRecognizer:email" in out and "0.90" in out
    assert "would redact: CREDIT_CARD 1, EMAIL_ADDRESS 1" in out
    code, out, _ = run_cli(["rules", "test", str(sample), "--show-values"], capsys)
    assert "jane.doe@example.com -> <EMAIL_ADDRESS>" in out
    assert "5555 5555 5555 4444 -> ************4444" in out


def test_rules_test_reads_otlp_json_from_stdin() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                                "spanId": "00f067aa0ba902b7",
                                "name": "POST /login",
                                "kind": 2,
                                "attributes": [
                                    {"key": "client.address", "value": {"stringValue": "203.0.113.9"}},
                                    {
                                        "key": "http.request.header.authorization",
                                        "value": {"stringValue": "Basic dXNlcjpwYXNz"},
                                    },
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    proc = subprocess.run(
        [sys.executable, "-m", "errorgate", "rules", "test", "-"],
        input=json.dumps(doc),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "client.address" in proc.stdout and "IP_ADDRESS" in proc.stdout
    assert "BLOCKED_KEY" in proc.stdout and "block_keys" in proc.stdout
    assert "203.0.113.9" not in proc.stdout and "dXNlcjpwYXNz" not in proc.stdout


def test_rules_failures_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["rules", "test", str(tmp_path / "missing.txt")], capsys)
    assert code != 0 and err.count("\n") == 1 and "missing.txt" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(HIPAA_CONFIG.replace("packs: [secrets, pci, gdpr, hipaa]", "packs: [nope]"))
    code, _, err = run_cli(["rules", "audit", "--config", str(bad)], capsys)
    assert code != 0 and "'nope' not found" in err and err.count("\n") == 1
