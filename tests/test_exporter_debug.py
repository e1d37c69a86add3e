"""``debug`` exporter: one summary line per batch on stderr, never attribute values."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from errorgate.component import ComponentContext
from errorgate.exporters.debug import DebugExporter, DebugExporterConfig
from errorgate.signals import Batch
from errorgate.telemetry import Telemetry
from tests.support.otlp_sink import log_request, trace_request


@pytest.mark.parametrize("verbosity", ["basic", "normal"])
def test_summary_line(tmp_path: Path, verbosity: str, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = ComponentContext("debug/x", tmp_path, Telemetry(), logging.getLogger("t"))
    exp = DebugExporter(DebugExporterConfig(verbosity=verbosity), ctx)  # type: ignore[arg-type]
    traces = trace_request(3, service="cart")
    traces.resource_spans.extend(trace_request(2, service="billing").resource_spans)
    exp.export(Batch.of(traces), 1)
    exp.export(Batch.of(log_request(4, body="secret@example.com")), 1)
    lines = capsys.readouterr().err.splitlines()
    if verbosity == "basic":
        assert lines == ["debug/x: traces items=5", "debug/x: logs items=4"]
    else:
        assert lines == [
            "debug/x: traces items=5 resources=2 services=billing,cart",
            "debug/x: logs items=4 resources=1 services=checkout",
        ]
