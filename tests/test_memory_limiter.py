"""service.memory_limiter: errorgate's whole process tree is measured; above the soft limit new
data is refused (retryable) and readiness fails, below it everything is accepted again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from errorgate.config import ConfigError, parse_config
from errorgate.service.memory import MemoryLimiter, process_tree_rss
from errorgate.telemetry import Telemetry
from tests.support.gateway import gateway_yaml, metric_value, running_gateway, scrape
from tests.test_reliability import batch, exporter_call

MIB = 1048576


def test_the_process_tree_is_measured_children_included() -> None:
    before = process_tree_rss()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; b = bytearray(80 * 1048576); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline()
        assert process_tree_rss() - before > 60 * MIB
    finally:
        child.kill()
        child.wait()


def test_over_the_soft_limit_new_data_is_refused_and_readiness_fails(tmp_path: Path) -> None:
    rss = [100 * MIB]
    text = gateway_yaml(tmp_path, exporter="  debug: {verbosity: basic}", exporter_id="debug")
    with running_gateway(text) as gw:
        gw.memory = MemoryLimiter(1000, 200, 0.05, gw.telemetry, measure=lambda: rss[0])
        gw.memory.start()
        with grpc.insecure_channel(gw.grpc_endpoint) as ch:
            call = exporter_call(ch)
            call(batch(1, 5).SerializeToString(), timeout=5)
            rss[0] = 900 * MIB  # above 1000 - 200
            gw.memory.check()
            with pytest.raises(grpc.RpcError) as refused:
                call(batch(2, 5).SerializeToString(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "service.memory_limiter" in (refused.value.details() or "")
            status, checks = gw.readiness()
            assert status == "fail" and "memory" in checks
            text_metrics = scrape(gw.metrics_endpoint)
            assert metric_value(text_metrics, "errorgate_memory_limiter_refusing") == 1
            assert metric_value(text_metrics, "errorgate_memory_rss_bytes") == 900 * MIB
            rss[0] = 500 * MIB
            gw.memory.check()
            call(batch(3, 5).SerializeToString(), timeout=5)
            assert gw.readiness()[0] == "pass"
            assert metric_value(scrape(gw.metrics_endpoint), "errorgate_received_items_total") == 10


def test_defaults_derive_from_the_memory_available() -> None:
    limiter = MemoryLimiter(0, 0, 1.0, Telemetry(), measure=lambda: 0)
    assert 0 < limiter.soft < limiter.hard
    assert limiter.soft == pytest.approx(limiter.hard * 0.8, rel=0.01)


def test_spike_must_be_below_the_limit(tmp_path: Path) -> None:
    text = gateway_yaml(
        tmp_path,
        exporter="  debug: {}",
        exporter_id="debug",
        service_extra="  memory_limiter: {limit_mib: 100, spike_limit_mib: 100}",
    )
    with pytest.raises(
        ConfigError, match=r"service\.memory_limiter: .*spike_limit_mib \(100\.0\) must be below limit_mib"
    ):
        parse_config(text, "<test>")


def test_a_real_limiter_starts_and_reads(tmp_path: Path) -> None:
    text = gateway_yaml(tmp_path, exporter="  debug: {}", exporter_id="debug")
    with running_gateway(text) as gw:
        assert gw.memory is not None
        time.sleep(0.1)
        assert metric_value(scrape(gw.metrics_endpoint), "errorgate_memory_rss_bytes") > 20 * MIB
