"""The file exporter's output is encrypted at rest whenever a keyring runs, and only
``errorgate decrypt --file`` (a role holder with a reason, audited) opens it again."""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

import pytest

from errorgate import attributes
from errorgate.cli import main
from errorgate.component import ComponentContext, Extensions
from errorgate.exporters.file import FileExporter, FileExporterConfig
from errorgate.extensions.keyring import KeyringExtension
from errorgate.governance.audit_log import AuditLog
from errorgate.governance.keyring import Keyring
from errorgate.otlp.json_format import from_json
from errorgate.signals import Batch, Signal
from errorgate.telemetry import Telemetry
from tests.support.otlp_sink import log_request

EMAIL = "carol.jones@example.org"
REASON = "INC-5150 export review for the auditors"
ME = pwd.getpwuid(os.getuid()).pw_name
POLICY = f"""
min_reason_length: 10
roles:
  privacy-officer: {{users: [{ME}], services: ["*"], keys: ["*"]}}
  nobody: {{users: [], services: ["*"], keys: ["*"]}}
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ERRORGATE_KEYRING", "ERRORGATE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    policy = tmp_path / "access.yaml"
    policy.write_text(POLICY)
    policy.chmod(0o644)
    monkeypatch.setenv("ERRORGATE_ACCESS_POLICY", str(policy))


def _export(tmp_path: Path, extensions: Extensions, **settings: str) -> Path:
    config = FileExporterConfig.model_validate({"path": str(tmp_path / "out"), **settings})
    context = ComponentContext("file", tmp_path, Telemetry(), logging.getLogger("t"), extensions=extensions)
    exporter = FileExporter(config, context)
    request = log_request(3, body=EMAIL)
    attributes.set_value(request.resource_logs[0].resource.attributes, "service.name", "checkout")
    exporter.export(Batch.of(request), 1)
    exporter.export(Batch.of(request), 1)
    exporter.shutdown()
    return tmp_path / "out" / "logs.jsonl"


def _ring(tmp_path: Path) -> Extensions:
    return Extensions({"keyring": KeyringExtension(Keyring.open(tmp_path / "keys", env_var=None))})


def test_file_output_is_sealed_per_line_when_a_keyring_runs(tmp_path: Path) -> None:
    path = _export(tmp_path, _ring(tmp_path))
    data = path.read_bytes()
    assert EMAIL.encode() not in data and b"resourceLogs" not in data
    lines = data.splitlines()
    assert len(lines) == 2 and all(line.startswith(b"egrest:v1:") for line in lines)


def test_encryption_off_and_no_keyring_write_plain_otlp_json(tmp_path: Path) -> None:
    plain = _export(tmp_path / "a", _ring(tmp_path / "a"), encryption="off")
    assert EMAIL in plain.read_text()
    no_ring = _export(tmp_path / "b", Extensions())
    assert next(from_json(Signal.LOGS, line) for line in no_ring.read_text().splitlines()).resource_logs


def test_decrypt_file_opens_sealed_output_for_a_role_holder_and_audits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(tmp_path, _ring(tmp_path))
    target = tmp_path / "opened.jsonl"
    rc = main(
        ["decrypt", "--data-dir", str(tmp_path), "--file", str(path), "--output", str(target),
         "--role", "privacy-officer", "--reason", REASON]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    requests = [from_json(Signal.LOGS, line) for line in target.read_text().splitlines()]
    assert (
        len(requests) == 2
        and requests[0].resource_logs[0].scope_logs[0].log_records[0].body.string_value == EMAIL + "-0"
    )
    assert target.stat().st_mode & 0o777 == 0o600
    [event] = [
        e for e in AuditLog(tmp_path / "audit" / "decrypt.log").entries() if e["event"] == "decrypt_file"
    ]
    assert event["outcome"] == "allowed" and event["user"] == ME and event["lines"] == 2
    assert event["reason"] == REASON and EMAIL not in str(event)


@pytest.mark.parametrize(
    ("role", "reason", "why"),
    [("nobody", REASON, "does not hold role nobody"), ("privacy-officer", "because", "reason")],
)
def test_decrypt_file_refuses_and_audits_without_role_or_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], role: str, reason: str, why: str
) -> None:
    path = _export(tmp_path, _ring(tmp_path))
    rc = main(
        ["decrypt", "--data-dir", str(tmp_path), "--file", str(path), "--role", role, "--reason", reason]
    )
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and EMAIL not in err and why in err
    [event] = [
        e for e in AuditLog(tmp_path / "audit" / "decrypt.log").entries() if e["event"] == "decrypt_file"
    ]
    assert event["outcome"] == "denied"


def test_decrypt_file_reports_a_tampered_line_and_reveals_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export(tmp_path, _ring(tmp_path))
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1][:-6] + (b"AAAAAA" if not lines[1].endswith(b"AAAAAA") else b"BBBBBB")
    path.write_bytes(b"\n".join(lines) + b"\n")
    rc = main(
        ["decrypt", "--data-dir", str(tmp_path), "--file", str(path), "--role", "privacy-officer", "--reason", REASON]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and "line 2" in err and "tampered" in err
