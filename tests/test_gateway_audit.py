"""What the gateway itself writes to the signed governance audit log (through its keyring
extension; the core never imports governance): dead letters removed by the store's limits, and
a change of the processors' rules at start-up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from errorgate.config import parse_config
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.governance.audit_log import AuditLog, AuditVerifier
from errorgate.service.gateway import Gateway
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.otlp_sink import trace_request


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ERRORGATE_KEYRING", raising=False)


def _config(data: Path, *, keyring: bool = True, max_age: str = "1h", redact: str = "{}") -> str:
    extensions = "extensions: {keyring: {}}\n" if keyring else ""
    enabled = "  extensions: [keyring]\n" if keyring else ""
    return f"""
receivers:
  otlp:
    protocols: {{grpc: {{endpoint: "127.0.0.1:0"}}}}
{extensions}processors:
  redact: {redact}
exporters:
  file: {{path: {data}/out}}
service:
  data_dir: {data}
{enabled}  dead_letter: {{max_age: {max_age}}}
  processor_worker: {{enabled: false}}
  pipelines:
    logs: {{receivers: [otlp], processors: [redact], exporters: [file]}}
"""


def _start_and_stop(yaml_text: str) -> Gateway:
    gateway = Gateway(parse_config(yaml_text, "<test>"))
    gateway.stop(timeout=10)
    return gateway


def _events(data: Path, event: str) -> list[dict[str, object]]:
    log = AuditLog(data / "audit" / "decrypt.log")
    assert log.verify(AuditVerifier.from_file(data / "audit" / "signing.key.pub")).ok
    return [e for e in log.entries() if e["event"] == event]


def _old_dead_letters(data: Path, n: int) -> list[str]:
    two_hours_ago = time.time() - 7200
    store = DeadLetterStore(data / "dlq", Telemetry(), clock=lambda: two_hours_ago)
    return [
        store.put(Signal.TRACES, trace_request(2), reason="queue_full", detail="x", source="test")
        for _ in range(n)
    ]


def test_dead_letters_expired_by_age_are_audited(tmp_path: Path) -> None:
    ids = _old_dead_letters(tmp_path, 3)
    _start_and_stop(_config(tmp_path))
    [event] = _events(tmp_path, "dead_letter_expired")
    assert event["limit"] == "max_age" and event["config_key"] == "service.dead_letter.max_age"
    assert event["entries"] == 3 and event["items"] == {"traces": 6}
    assert (
        sorted(event["entry_ids"]) == sorted(ids) and event["identity_source"] == "gateway" and event["sig"]
    )
    assert list((tmp_path / "dlq").iterdir()) == []


def test_without_a_keyring_expiry_is_still_counted_and_nothing_is_audited(tmp_path: Path) -> None:
    _old_dead_letters(tmp_path, 1)
    gateway = _start_and_stop(_config(tmp_path, keyring=False))
    assert not (tmp_path / "audit").exists()
    expired = gateway.telemetry.dead_letter_expired.labels("traces", "max_age")._value.get()
    assert expired == 2


def test_rules_change_is_recorded_at_start_up_only_when_the_rules_differ(tmp_path: Path) -> None:
    _start_and_stop(_config(tmp_path))
    _start_and_stop(_config(tmp_path))  # same rules: nothing new
    [first] = _events(tmp_path, "rules_change")
    assert first["previous_sha256"] is None and len(str(first["rules_sha256"])) == 64
    _start_and_stop(_config(tmp_path, redact="{allow_keys: [order.note]}"))
    changes = _events(tmp_path, "rules_change")
    assert len(changes) == 2
    assert changes[1]["previous_sha256"] == first["rules_sha256"] != changes[1]["rules_sha256"]
