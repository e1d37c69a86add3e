"""The demo shop (three processes on errorgate-kit) through a real errorgate gateway: a call
retried-then-succeeded is ``transient``, a stock-db outage is ``cascading`` from ``stock-db`` in
every service above it, a malformed order event is category ``validation`` and parked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from errorgate.attributes import to_dict
from tests.kit.conftest import start_redis
from tests.support.gateway import free_port, gateway_yaml, otlp_exporter_yaml, running_gateway
from tests.support.otlp_sink import OtlpSink

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "kit" / "demo" / "shop.py"


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"service exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


def post(url: str, body: dict[str, object] | bytes, key: str | None = None) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **({"Idempotency-Key": key} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=15) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def tagged(sink: OtlpSink) -> list[tuple[str, Span, dict[str, object]]]:
    out = []
    for request in sink._requests(sink_signal()):
        for rs in request.resource_spans:
            service = str(to_dict(rs.resource.attributes).get("service.name"))
            out.extend((service, s, to_dict(s.attributes)) for ss in rs.scope_spans for s in ss.spans)
    return out


def sink_signal():  # type: ignore[no-untyped-def]
    from errorgate.signals import Signal

    return Signal.TRACES


@pytest.mark.slow
def test_shop_telemetry_through_errorgate(tmp_path: Path, redis_url: str) -> None:
    queue = redis.Redis.from_url(redis_url)
    queue.delete("orders", "orders:dlq", "charges")
    stock_proc, stock_url = start_redis(tmp_path / "stock")
    redis.Redis.from_url(stock_url).set("stock:A1", 10)
    grpc = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with OtlpSink() as sink:
        cfg = gateway_yaml(tmp_path / "data", exporter=otlp_exporter_yaml(sink.grpc_endpoint),
                           processors="{classify: {}}", pipeline_processors="[classify]", grpc_port=grpc,
                           service_extra="  assembly: {decision_wait: 1s}")  # fmt: skip
        with running_gateway(cfg):
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            ports = {"inventory": free_port(), "orders": free_port()}
            common = ["--otlp", f"127.0.0.1:{grpc}", "--redis", redis_url, "--stock-db", stock_url,
                      "--inventory", f"http://127.0.0.1:{ports['inventory']}"]  # fmt: skip
            try:
                for role in ("inventory", "orders", "billing"):
                    port = ["--port", str(ports[role])] if role in ports else []
                    procs.append(subprocess.Popen([sys.executable, str(SHOP), role, *port, *common], env=env))
                wait_port(ports["inventory"], procs[0])
                wait_port(ports["orders"], procs[1])
                orders = f"http://127.0.0.1:{ports['orders']}/orders"
                inventory = f"http://127.0.0.1:{ports['inventory']}"
                # 1. inventory sheds two requests: orders retries and succeeds.
                urllib.request.urlopen(
                    urllib.request.Request(f"{inventory}/chaos/flaky?n=2", data=b""), timeout=5
                )
                assert post(orders, {"sku": "A1", "qty": 1}, key="order-1") == 201
                assert post(orders, {"sku": "A1", "qty": 1}, key="order-1") == 201  # replayed
                # 2. a malformed order event on the queue.
                queue.xadd("orders", {"payload": b'{"sku": "A1", "qty": "lots"}'})
                # 3. stock-db dies.
                stock_proc.kill()
                stock_proc.wait(10)
                assert post(orders, {"sku": "A1", "qty": 1}) == 503
                deadline = time.monotonic() + 10
                while queue.xlen("orders:dlq") < 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc in procs:
                    proc.wait(15)
            time.sleep(2.5)  # the assembly's decision wait
    assert queue.llen("charges") == 1  # one order charged: the replay created no duplicate
    (_, parked), = queue.xrange("orders:dlq")  # fmt: skip
    assert b"ValidationError" in parked[b"dlq.reason"]
    spans = tagged(sink)
    failing = [(svc, s, a) for svc, s, a in spans if "errorgate.error.kind" in a]
    assert failing, [(svc, s.name) for svc, s, _ in spans]

    def find(service: str, name: str) -> list[dict[str, object]]:
        return [a for svc, s, a in failing if svc == service and s.name == name]

    # Retried then succeeded: the shed attempts are transient, their origin the inventory service.
    shed = [a for a in find("orders", "GET /stock") if a.get("http.response.status_code") == 503
            and a.get("errorgate.error.origin_service") == "inventory"]  # fmt: skip
    assert len(shed) == 2 and {a["errorgate.error.kind"] for a in shed} == {"transient"}
    # The outage: stock-db is the origin; inventory and orders above it are cascading from it.
    db = find("inventory", "GET stock")
    assert (
        db
        and db[0]["errorgate.error.origin"] is True
        and db[0]["errorgate.error.origin_service"] == "stock-db"
    )
    for service, name in (("inventory", "GET /stock/{sku}"), ("orders", "POST /orders")):
        found = find(service, name)
        assert found, (service, name)
        assert {a["errorgate.error.kind"] for a in found} == {"cascading"}
        assert {a["errorgate.error.origin_service"] for a in found} == {"stock-db"}
    # The malformed message: category and domain of validation.
    bad = find("billing", "process orders")
    assert (
        bad
        and bad[0]["errorgate.error.category"] == "validation"
        and bad[0]["errorgate.error.domain"] == "data"
    )
