"""Dead-letter store and the ``errorgate dlq list|replay`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from errorgate.cli import main
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.gateway import write_config
from tests.support.otlp_sink import OtlpSink, log_request, trace_request

ROOT = Path(__file__).resolve().parent.parent


def test_store_roundtrip_and_metric(tmp_path: Path) -> None:
    telemetry = Telemetry()
    store = DeadLetterStore(tmp_path / "dlq", telemetry)
    req = log_request(4, body="card 4111-1111-1111-1111")
    entry_id = store.put(
        Signal.LOGS, req, reason="processor_error", detail="ValueError in redact", source="processor:redact"
    )
    store.put(
        Signal.TRACES,
        trace_request(2),
        reason="invalid_item",
        detail="span id not 8 bytes",
        source="receiver:otlp",
    )
    reopened = DeadLetterStore(tmp_path / "dlq", Telemetry())
    entries = reopened.list()
    assert [(e.signal, e.items, e.reason, e.source) for e in entries] == [
        (Signal.LOGS, 4, "processor_error", "processor:redact"),
        (Signal.TRACES, 2, "invalid_item", "receiver:otlp"),
    ]
    assert reopened.load(entry_id) == (Signal.LOGS, req)
    # Metadata never carries payload values.
    assert "4111" not in (tmp_path / "dlq" / f"{entry_id}.json").read_text()
    assert (
        telemetry.registry.get_sample_value(
            "errorgate_dead_lettered_items_total", {"signal": "logs", "reason": "processor_error"}
        )
        == 4
    )
    reopened.remove(entry_id)
    assert [e.signal for e in DeadLetterStore(tmp_path / "dlq", Telemetry()).list()] == [Signal.TRACES]
    with pytest.raises(KeyError):
        reopened.load(entry_id)
    with pytest.raises(KeyError):
        reopened.load("../etc/passwd")


def test_orphan_payload_from_a_crash_is_cleaned(tmp_path: Path) -> None:
    (tmp_path / "dlq").mkdir()
    (tmp_path / "dlq" / "0000000000001-aaaa.bin").write_bytes(b"half")
    (tmp_path / "dlq" / "x.json.tmp").write_bytes(b"{")
    store = DeadLetterStore(tmp_path / "dlq", Telemetry())
    assert store.list() == [] and list((tmp_path / "dlq").iterdir()) == []


class _Codec:
    def encode(self, data: bytes) -> bytes:
        return b"E" + data[::-1]

    def decode(self, data: bytes) -> bytes:
        if data[:1] != b"E":
            raise ValueError("tampered")
        return data[1:][::-1]


def test_codec_encrypts_payload_at_rest(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path, Telemetry(), _Codec())
    entry_id = store.put(Signal.LOGS, log_request(1, body="secret-body"), reason="r", detail="d", source="s")
    assert b"secret-body" not in (tmp_path / f"{entry_id}.bin").read_bytes()
    assert store.load(entry_id)[1] == log_request(1, body="secret-body")
    with pytest.raises(ValueError):
        DeadLetterStore(tmp_path, Telemetry()).load(entry_id)  # raw bytes do not parse as the request


# ---------------------------------------------------------------- CLI


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def _config(tmp_path: Path, sink: OtlpSink) -> Path:
    return write_config(
        tmp_path,
        exporters=f"""
            otlp:
              endpoint: {sink.grpc_endpoint}
              tls: {{insecure: true}}
              retry_on_failure: {{initial_interval: 10ms, max_interval: 50ms}}
            otlp/http:
              endpoint: {sink.http_url}
              protocol: http/protobuf
            file: {{path: {tmp_path / "out"}}}
        """,
        pipelines="""
            traces: {receivers: [otlp], exporters: [otlp]}
            logs: {receivers: [otlp], exporters: [otlp, file]}
        """,
    )


def _seed(tmp_path: Path) -> tuple[DeadLetterStore, list[str]]:
    store = DeadLetterStore(tmp_path / "data" / "dlq", Telemetry())
    ids = [
        store.put(
            Signal.TRACES,
            trace_request(3),
            reason="permanent_export_error",
            detail="INVALID_ARGUMENT",
            source="exporter:otlp",
        ),
        store.put(
            Signal.LOGS,
            log_request(2, body="pii@example.com"),
            reason="processor_error",
            detail="KeyError in sample",
            source="processor:sample",
        ),
    ]
    return store, ids


def test_list_text_and_json(tmp_path: Path, sink: OtlpSink, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, sink)
    _store, ids = _seed(tmp_path)
    assert main(["dlq", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert ids[0] in out and ids[1] in out and "processor:sample" in out and "KeyError in sample" in out
    assert "pii@example.com" not in out and "2 entries, 5 items" in out
    assert main(["dlq", "list", "--config", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["signal"], r["items"], r["reason"]) for r in rows] == [
        (ids[0], "traces", 3, "permanent_export_error"),
        (ids[1], "logs", 2, "processor_error"),
    ]


def test_replay_sends_through_pipeline_exporters_and_removes(tmp_path: Path, sink: OtlpSink) -> None:
    config = _config(tmp_path, sink)
    store = DeadLetterStore(tmp_path / "data" / "dlq", Telemetry())
    store.put(
        Signal.TRACES, trace_request(3), reason="permanent_export_error", detail="x", source="exporter:otlp"
    )
    store.put(
        Signal.LOGS,
        log_request(2, body="pii@example.com"),
        reason="max_elapsed_time",
        detail="UNAVAILABLE",
        source="exporter:otlp",
    )
    sink.fail_next(2, grpc_code=grpc.StatusCode.UNAVAILABLE)  # transient: replay retries
    proc = subprocess.run(
        [sys.executable, "-m", "errorgate", "dlq", "replay", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "replayed 2 of 2 entries (5 items); 0 failed" in proc.stdout
    assert sink.requests[0].request == trace_request(3)
    assert sink.requests[1].request == log_request(2, body="pii@example.com")
    # logs pipeline also exports to file: the entry reached both.
    assert "pii@example.com" in (tmp_path / "out" / "logs.jsonl").read_text()
    assert store.list() == []


def test_replay_failure_keeps_entry_and_exits_nonzero(
    tmp_path: Path, sink: OtlpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sink)
    store, ids = _seed(tmp_path)
    sink.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT)
    assert main(["dlq", "replay", "--config", str(config), "--id", ids[0]]) == 1
    captured = capsys.readouterr()
    assert "permanent error INVALID_ARGUMENT" in captured.err and "0 of 1 entries" in captured.out
    assert [e.id for e in store.list()] == ids
    # Now through an explicitly named exporter.
    assert main(["dlq", "replay", "--config", str(config), "--id", ids[0], "--exporter", "otlp/http"]) == 0
    assert [e.id for e in store.list()] == [ids[1]]
    assert [r.protocol for r in sink.requests] == ["http"]


def test_replay_bad_arguments_are_one_line_errors(
    tmp_path: Path, sink: OtlpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sink)
    _seed(tmp_path)
    assert main(["dlq", "replay", "--config", str(config), "--exporter", "nope"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--exporter: 'nope' is not defined" in err
    assert main(["dlq", "replay", "--config", str(config), "--id", "missing"]) != 0
    assert "--id: no dead-letter entry 'missing'" in capsys.readouterr().err
