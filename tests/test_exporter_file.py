"""``file`` exporter: OTLP/JSON lines per signal, size-based rotation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from errorgate.component import ComponentContext, ExportStatus
from errorgate.exporters.file import FileExporter, FileExporterConfig
from errorgate.otlp.json_format import from_json
from errorgate.signals import Batch, Signal
from errorgate.telemetry import Telemetry
from tests.support.otlp_sink import log_request, metric_request, trace_request


def _exporter(tmp_path: Path, **rotation: float) -> FileExporter:
    config = FileExporterConfig.model_validate({"path": str(tmp_path / "out"), "rotation": rotation})
    return FileExporter(config, ComponentContext("file", tmp_path, Telemetry(), logging.getLogger("t")))


def test_one_request_per_line_per_signal_file(tmp_path: Path) -> None:
    exp = _exporter(tmp_path)
    sent = {
        Signal.TRACES: [trace_request(3), trace_request(2, start=3)],
        Signal.LOGS: [log_request(4)],
        Signal.METRICS: [metric_request(5)],
    }
    for requests in sent.values():
        for req in requests:
            assert exp.export(Batch.of(req), 1).status is ExportStatus.SUCCESS
    # Flushed per batch: readable before shutdown.
    for signal, requests in sent.items():
        lines = (tmp_path / "out" / f"{signal.value}.jsonl").read_text().splitlines()
        assert [from_json(signal, line) for line in lines] == requests
    exp.shutdown()
    doc = json.loads((tmp_path / "out" / "traces.jsonl").read_text().splitlines()[0])
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # The Collector's OTLP/JSON: camelCase keys, hex ids.
    assert span["traceId"] == "00000000000000000000000000000001" and span["spanId"] == "0000000000000001"


def test_size_rotation_keeps_lines_whole_and_bounds_backups(tmp_path: Path) -> None:
    line_len = len(_line(trace_request(10)))
    exp = _exporter(tmp_path, max_megabytes=(line_len * 3.5) / 1048576, max_backups=2)
    for i in range(10):
        exp.export(Batch.of(trace_request(10, start=i * 10)), 1)
    exp.shutdown()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    starts = []
    for name in ("traces.jsonl.2", "traces.jsonl.1", "traces.jsonl"):
        lines = (out / name).read_text().splitlines()
        assert 1 <= len(lines) <= 3
        for line in lines:
            req = from_json(Signal.TRACES, line)  # every line parses: never split across files
            starts.append(int(req.resource_spans[0].scope_spans[0].spans[0].name.split("-")[1]))  # type: ignore[union-attr]
    # Newest data kept, oldest rotated away, order preserved across files.
    assert starts == list(range(starts[0], 100, 10)) and starts[-1] == 90 and starts[0] > 0


def test_appends_after_restart(tmp_path: Path) -> None:
    exp = _exporter(tmp_path)
    exp.export(Batch.of(log_request(1)), 1)
    exp.shutdown()
    exp2 = _exporter(tmp_path)
    exp2.export(Batch.of(log_request(1, start=1)), 1)
    exp2.shutdown()
    assert len((tmp_path / "out" / "logs.jsonl").read_text().splitlines()) == 2


def _line(req: object) -> str:
    from errorgate.otlp.json_format import to_json

    return to_json(req) + "\n"  # type: ignore[arg-type]
