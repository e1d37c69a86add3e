"""Deploy verdicts through a real gateway (processor worker on, as by default): synthetic traffic
per version, the verdict served at /api/v1/verdict on the metrics endpoint and by
``errorgate verdict`` with its exit codes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from errorgate.cli import main as cli
from errorgate.service.gateway import Gateway
from tests.support.deploy_traffic import Traffic, send
from tests.support.gateway import gateway_yaml, running_gateway

N = 600  # requests per version: above the default min_requests (500) of the 10m window


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("verdict")
    cfg = gateway_yaml(
        data / "data",
        exporter=f"  file: {{path: {data / 'out'}}}",
        exporter_id="file",
        processors="{classify: {}}",
        pipeline_processors="[classify]",
        metrics_processors="[]",
    )
    with running_gateway(cfg) as gw:
        send(
            gw.grpc_endpoint,
            # A v2 failing 5 points more than a healthy v1 (1 % → 6 %).
            Traffic("checkout", "1.0", N, fail_per_100=1),
            Traffic("checkout", "2.0", N, fail_per_100=6),
            # Same failure ratio, but v2 shows an error group v1 never had.
            Traffic("search", "1.0", N, fail_per_100=1),
            Traffic("search", "2.0", N, fail_per_100=1, extra_failures=5),
            # Equal versions.
            Traffic("cart", "1.0", N, fail_per_100=1),
            Traffic("cart", "2.0", N, fail_per_100=1),
            # Too little traffic to tell.
            Traffic("tiny", "1.0", 40, fail_per_100=1),
            Traffic("tiny", "2.0", 40, fail_per_100=10),
            # Slower v2 (200 ms against 50 ms), no more failures.
            Traffic("pricing", "1.0", N, latency=0.05),
            Traffic("pricing", "2.0", N, latency=0.2),
        )
        _wait_for(gw, "pricing", "2.0")
        yield gw


def _get(gw: Gateway, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://{gw.metrics_endpoint}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for(gw: Gateway, service: str, version: str) -> None:
    """Until the gateway has classified the traffic (the last version sent answers)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, body = _get(gw, f"/api/v1/verdict?service={service}&candidate={version}&baseline=1.0")
        if code == 200 and body["evidence"]["requests"]["candidate"] >= N:
            return
        time.sleep(0.2)
    raise AssertionError(f"{service} {version} never showed up")


def verdict(gw: Gateway, service: str, candidate: str = "2.0", baseline: str = "1.0") -> Any:
    code, body = _get(gw, f"/api/v1/verdict?service={service}&candidate={candidate}&baseline={baseline}")
    assert code == 200, body
    return body


def test_five_points_more_failures_fails(gateway: Gateway) -> None:
    body = verdict(gateway, "checkout")
    assert body["verdict"] == "fail"
    ratio = body["evidence"]["failure_ratio"]
    assert ratio["verdict"] == "fail" and ratio["p_value"] < 0.01
    assert ratio["candidate"]["ratio"] == pytest.approx(0.06) and ratio["baseline"]["ratio"] == pytest.approx(
        0.01
    )
    assert "failure ratio 6.00% vs baseline 1.00%" in body["evidence"]["reasons"][0]


def test_new_fingerprint_fails(gateway: Gateway) -> None:
    body = verdict(gateway, "search")
    assert body["verdict"] == "fail"
    assert body["evidence"]["failure_ratio"]["verdict"] == "pass"  # within the tolerated increase
    new = body["evidence"]["new_fingerprints"]
    assert new["verdict"] == "fail" and new["fingerprints"][0]["count"] == 5


def test_equal_versions_pass(gateway: Gateway) -> None:
    body = verdict(gateway, "cart")
    assert body["verdict"] == "pass", body["evidence"]["reasons"]
    assert body["evidence"]["latency"]["candidate"]["p95_ms"] == pytest.approx(50, rel=0.02)


def test_too_little_traffic_is_inconclusive(gateway: Gateway) -> None:
    body = verdict(gateway, "tiny")
    assert body["verdict"] == "inconclusive"
    assert body["evidence"]["requests"] == {"candidate": 40, "baseline": 40}


def test_slower_candidate_fails_on_latency(gateway: Gateway) -> None:
    body = verdict(gateway, "pricing")
    assert body["verdict"] == "fail"
    assert body["evidence"]["latency"]["verdict"] == "fail"
    assert body["evidence"]["failure_ratio"]["verdict"] == "pass"


def test_bad_input_names_it(gateway: Gateway) -> None:
    code, body = _get(gateway, "/api/v1/verdict?service=nope&candidate=2.0&baseline=1.0")
    assert code == 404 and "service 'nope'" in body["error"]
    code, body = _get(gateway, "/api/v1/verdict?service=cart&candidate=9.9&baseline=1.0")
    assert code == 404 and "candidate version '9.9'" in body["error"] and "1.0, 2.0" in body["error"]
    code, body = _get(gateway, "/api/v1/verdict?service=cart&candidate=2.0")
    assert code == 400 and "'baseline'" in body["error"]
    code, body = _get(gateway, "/api/v1/verdict?service=cart&candidate=2.0&baseline=1.0&window=soon")
    assert code == 400 and "'window'" in body["error"]


def test_flagger_webhook_post(gateway: Gateway) -> None:
    """Flagger POSTs its payload; candidate/baseline default to the newest version and the one before."""
    for service, expected in (("cart", 200), ("checkout", 412)):
        payload = json.dumps(
            {"name": service, "namespace": "prod", "phase": "Progressing", "metadata": {"service": service}}
        )
        req = urllib.request.Request(
            f"http://{gateway.metrics_endpoint}/api/v1/verdict", data=payload.encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                code, body = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            code, body = e.code, json.loads(e.read())
        assert code == expected, body
        assert body["evidence"]["candidate"] == "2.0" and body["evidence"]["baseline"] == "1.0"


@pytest.mark.parametrize(("service", "code"), [("cart", 0), ("checkout", 1), ("tiny", 2)])
def test_cli_exit_codes(
    gateway: Gateway, service: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["verdict", "--service", service, "--candidate", "2.0", "--baseline", "1.0"]
    assert cli([*argv, "--endpoint", gateway.metrics_endpoint, "--format", "json"]) == code
    assert json.loads(capsys.readouterr().out)["verdict"] == ("pass", "fail", "inconclusive")[code]


def test_cli_with_config_and_bad_input(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = gateway.metrics_endpoint.rpartition(":")[2]
    config = tmp_path / "c.yaml"
    config.write_text(
        gateway_yaml(
            tmp_path / "d", exporter="  file: {path: /tmp/x}", exporter_id="file", metrics_port=int(port)
        )
    )
    argv = [
        "verdict",
        "--service",
        "checkout",
        "--candidate",
        "2.0",
        "--baseline",
        "1.0",
        "--config",
        str(config),
    ]
    assert cli(argv) == 1
    assert capsys.readouterr().out.startswith("fail: checkout 2.0 vs 1.0")
    assert (
        cli(
            [
                "verdict",
                "--service",
                "checkout",
                "--candidate",
                "3.0",
                "--baseline",
                "1.0",
                "--endpoint",
                gateway.metrics_endpoint,
            ]
        )
        == 3
    )
    assert "candidate version '3.0' of service 'checkout'" in capsys.readouterr().err
