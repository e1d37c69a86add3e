"""``errorgate dlq replay`` with ``ha:``: one replay at a time across instances, by a lock on a
real three-member etcd cluster (Debian's etcd-server on loopback). A second replay while one
runs is refused with a one-line reason naming the holder and sends nothing; without quorum no
replay starts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from errorgate.cli import main
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.ha.election import Election
from errorgate.ha.etcd import EtcdClient
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.etcd import ETCD, MISSING, etcd_cluster
from tests.support.gateway import write_config
from tests.support.otlp_sink import OtlpSink, trace_request

pytestmark = pytest.mark.skipif(not Path(ETCD).exists(), reason=MISSING)
LOCK = "/errorgate-test/dlq-replay/leader"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[list[str], list[subprocess.Popen[bytes]]]]:
    with etcd_cluster(tmp_path / "etcd") as running:
        yield running


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


def _config(tmp_path: Path, sink: OtlpSink, endpoints: list[str]) -> Path:
    return write_config(
        tmp_path,
        exporters=f"otlp: {{endpoint: {sink.grpc_endpoint}, tls: {{insecure: true}}}}",
        pipelines="traces: {receivers: [otlp], exporters: [otlp]}",
        extra=f"""
            ha:
              etcd: {{endpoints: [{", ".join(endpoints)}], timeout: 0.5s}}
              prefix: /errorgate-test
        """,
    )


def test_a_replay_is_refused_while_another_holds_the_lock(
    cluster: tuple[list[str], list[subprocess.Popen[bytes]]],
    tmp_path: Path,
    sink: OtlpSink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoints, members = cluster
    config = _config(tmp_path, sink, endpoints)
    store = DeadLetterStore(tmp_path / "data" / "dlq", Telemetry())
    store.put(Signal.TRACES, trace_request(3), reason="max_elapsed_time", detail="x", source="exporter:otlp")
    running = Election(EtcdClient(endpoints, timeout=0.5), "/errorgate-test/dlq-replay", "replay-on-eg0")
    running.step()
    assert running.is_leader

    assert main(["dlq", "replay", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"errorgate dlq: another replay is running (replay-on-eg0 holds {LOCK}); run it again when it ends"
    )
    assert sink.requests == [] and len(store.list()) == 1

    running.client.revoke(running._lease)  # that replay ended
    assert main(["dlq", "replay", "--config", str(config)]) == 0
    assert "replayed 1 of 1 entries (3 items)" in capsys.readouterr().out
    assert len(sink.requests) == 1 and store.list() == []
    assert EtcdClient(endpoints).get(LOCK) is None  # released at the end, not after the ttl

    store.put(Signal.TRACES, trace_request(1), reason="max_elapsed_time", detail="x", source="exporter:otlp")
    for member in members[1:]:  # quorum lost: no lock, no replay
        member.kill()
        member.wait(5)
    assert main(["dlq", "replay", "--config", str(config)]) == 2
    assert "cannot take the replay lock" in capsys.readouterr().err
    assert len(sink.requests) == 1 and len(store.list()) == 1
