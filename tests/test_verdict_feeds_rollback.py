"""A ``fail`` that errorgate answers to Argo Rollouts or Flagger over ``/api/v1/verdict`` is a
judged deploy for the rollback trigger, as its own periodic check's is: acted on once per
(service, candidate), within the cooldown, without waiting for ``check_interval``. Classify is
built directly (its HTTP answers are what the metrics endpoint serves); the periodic check is
never polled here, so whatever fires came from the asked verdicts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from errorgate.component import ComponentContext, Extension, Extensions, HttpQuery
from errorgate.processors.classify import Classify, ClassifyConfig
from errorgate.telemetry import Telemetry
from tests.test_rollback import T0, Capture, bad_deploy


class Recorder(Extension):
    def __init__(self) -> None:
        self.records: list[Mapping[str, Any]] = []

    def audit(self, record: Mapping[str, Any]) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.server.shutdown()


def _classify(tmp_path: Path, url: str, **rollback: Any) -> tuple[Classify, Recorder]:
    recorder = Recorder()
    config = ClassifyConfig(
        deploys={
            "rollback": {
                "enabled": True,
                "cooldown": "30m",
                "actions": [{"kind": "webhook", "url": f"{url}/hooks/rollback"}],
                **rollback,
            }
        }
    )
    context = ComponentContext(
        "classify", tmp_path, Telemetry(), logging.getLogger("t"), extensions=Extensions({"r": recorder})
    )
    processor = Classify(config, context)
    processor.start()
    return processor, recorder


def _ask(processor: Classify, method: str = "GET", **params: str) -> int:
    if method == "POST":  # Flagger: the service in the payload's metadata
        body = json.dumps({"name": "podinfo", "metadata": params}).encode()
        return processor.answer(HttpQuery("POST", "/api/v1/verdict", {}, body)).status
    return processor.answer(HttpQuery("GET", "/api/v1/verdict", params)).status


def _settle(capture: Capture, expected: int) -> None:
    deadline = time.monotonic() + 5
    while len(capture.requests) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # and nothing more arrives


def test_a_fail_asked_over_http_fires_the_rollback_once(capture: Capture, tmp_path: Path) -> None:
    processor, recorder = _classify(tmp_path, capture.url)
    try:
        bad_deploy(processor.deploys)
        for _ in range(3):  # Argo asks every interval
            assert _ask(processor, service="checkout", candidate="2.0", baseline="1.0") == 200
        assert _ask(processor, "POST", service="checkout") == 412  # Flagger's webhook
        _settle(capture, 1)
    finally:
        processor.shutdown()
    (hook,) = capture.by_path("/hooks/rollback")
    assert hook["body"]["candidate"] == "2.0" and hook["body"]["baseline"] == "1.0"
    (record,) = recorder.records
    assert record["event"] == "rollback" and record["source"] == "verdict_request"


def test_the_cooldown_holds_for_asked_verdicts(capture: Capture, tmp_path: Path) -> None:
    processor, _ = _classify(tmp_path, capture.url)
    try:
        bad_deploy(processor.deploys)
        assert _ask(processor, service="checkout", candidate="2.0", baseline="1.0") == 200
        _settle(capture, 1)
        bad_deploy(processor.deploys, good="2.0", bad="3.0", at=T0 + 200)
        assert _ask(processor, service="checkout", candidate="3.0", baseline="2.0") == 200
        _settle(capture, 2)
    finally:
        processor.shutdown()
    assert [r["body"]["candidate"] for r in capture.requests] == ["2.0"]


def test_passing_asked_verdicts_and_opting_out_fire_nothing(capture: Capture, tmp_path: Path) -> None:
    processor, _ = _classify(tmp_path, capture.url)
    try:
        for v, at in (("1.0", T0), ("2.0", T0 + 100)):
            for i in range(10):
                processor.deploys.record_requests("cart", v, at + i, 100, 1)
        assert _ask(processor, service="cart", candidate="2.0", baseline="1.0") == 200
        _settle(capture, 0)
    finally:
        processor.shutdown()
    off, _ = _classify(tmp_path, capture.url, asked_verdicts=False)
    try:
        bad_deploy(off.deploys)
        assert _ask(off, service="checkout", candidate="2.0", baseline="1.0") == 200
        _settle(capture, 0)
    finally:
        off.shutdown()
    assert capture.requests == []
