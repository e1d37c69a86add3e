"""Checks the gateway makes of a config's pipelines when it builds them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from errorgate.config import parse_config
from errorgate.service.gateway import Gateway
from tests.support.gateway import gateway_yaml

EXPORTER = "  debug: {verbosity: basic}"
NO_WORKER = "  processor_worker: {enabled: false}"


def _build(tmp_path: Path, processors: str, pipeline: str) -> Gateway:
    text = gateway_yaml(
        tmp_path,
        exporter=EXPORTER,
        processors=processors,
        pipeline_processors=pipeline,
        metrics_processors="[]",
        service_extra=NO_WORKER,
        exporter_id="debug",
    )
    return Gateway(parse_config(text, "<test>"))


@pytest.mark.parametrize(
    ("processors", "pipeline", "warned"),
    [
        ("{classify: {}, sample: {}, retention: {}}", "[classify, sample, retention]", ["traces", "logs"]),
        # redact before classify cannot clean the template classify writes afterwards
        ("{redact: {workers: 0}, classify: {}}", "[redact, classify]", ["traces", "logs"]),
        (
            "{classify: {}, redact: {workers: 0, free_text_keys: [message]}}",
            "[classify, redact]",
            ["traces", "logs"],
        ),
        ("{classify: {}, redact: {workers: 0}}", "[classify, redact]", []),
        ("{sample: {}}", "[sample]", []),
    ],
)
def test_classify_without_a_redact_that_cleans_templates_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, processors: str, pipeline: str, warned: list[str]
) -> None:
    caplog.set_level(logging.WARNING, logger="errorgate.gateway")
    gateway = _build(tmp_path, processors, pipeline)
    try:
        lines = [r.getMessage() for r in caplog.records if "errorgate.error.template" in r.getMessage()]
        assert [line.split(":", 1)[0] for line in lines] == [f"pipeline {name}" for name in warned]
        assert all("personal names" in line for line in lines)
    finally:
        gateway.stop(timeout=5)
