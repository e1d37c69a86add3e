"""Storage under pressure, part by part: a failed write never leaves a torn frame in front of
later records, recovery skips only damage, the dead-letter store is bounded, disk pressure
refuses new data (UNAVAILABLE, readiness fail) and recovers. The whole gateway on a real full
filesystem is tests/test_disk_full.py."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import grpc
import pytest

from errorgate.delivery.disk import DiskGuard
from errorgate.delivery.diskqueue import PersistentQueue
from errorgate.delivery.dlq import DeadLetterStore
from errorgate.errors import Backpressure, StorageUnavailable
from errorgate.pipeline.hold.store import HoldStore
from errorgate.signals import Signal
from errorgate.telemetry import Telemetry
from tests.support.gateway import gateway_yaml, metric_value, running_gateway, scrape
from tests.support.otlp_sink import trace_request

MIB = 1048576
_REAL_WRITE = os.write  # the tests below replace os.write / os.writev (one module object)


def _names(q: PersistentQueue) -> list[str]:
    out = []
    while (rec := q.get(timeout=0.05)) is not None:
        req = rec.to_request()
        out.extend(s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)  # type: ignore[union-attr]
        q.ack(rec.seq)
    return out


class _FailingWrites:
    """``os.writev``/``os.write`` that write part of the data, then fail like a full disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, attr: str) -> None:
        self.real = getattr(os, attr)
        self.failing = False
        self.attr = attr
        monkeypatch.setattr(module, attr, self)

    def __call__(self, fd: int, data: object) -> int:
        if not self.failing:
            return int(self.real(fd, data))
        first = bytes(data[0]) if isinstance(data, tuple | list) else bytes(data)  # type: ignore[index,arg-type]
        _REAL_WRITE(fd, first[: max(1, len(first) // 2)])  # a torn frame reaches the file
        raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_queue_write_leaves_no_torn_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the torn frame stayed and records acknowledged after it were cut off on restart."""
    import errorgate.delivery.diskqueue as diskqueue

    writes = _FailingWrites(monkeypatch, diskqueue.os, "writev")
    q = PersistentQueue(tmp_path, max_bytes=MIB)
    q.put(Signal.TRACES, trace_request(1, start=0), 1)
    writes.failing = True
    with pytest.raises(StorageUnavailable, match="ENOSPC"):
        q.put(Signal.TRACES, trace_request(1, start=1), 1)
    assert isinstance(StorageUnavailable("x"), Backpressure)  # clients retry: UNAVAILABLE, not INTERNAL
    writes.failing = False
    q.put(Signal.TRACES, trace_request(1, start=2), 1)  # acknowledged after the failed one
    q.close()
    reopened = PersistentQueue(tmp_path, max_bytes=MIB)
    assert _names(reopened) == ["op-0", "op-2"]
    reopened.close()


def test_torn_frame_before_acknowledged_records_is_skipped_not_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment with garbage in its middle (written by an older version, or damage): recovery
    keeps the records after it, and says so at WARNING."""
    q = PersistentQueue(tmp_path, max_bytes=MIB)
    q.put(Signal.TRACES, trace_request(1, start=0), 1)
    q.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    good = seg.read_bytes()
    with open(seg, "ab") as f:
        f.write(good[: len(good) // 2])  # a torn frame
    q = PersistentQueue(tmp_path, max_bytes=MIB)  # the torn tail is cut (never acknowledged)
    q.close()
    with open(seg, "ab") as f:  # now garbage, then two good records behind it
        f.write(b"\x07" * 40 + good + good)
    caplog.set_level(logging.INFO, logger="errorgate.queue")
    damaged: list[int] = []
    q = PersistentQueue(tmp_path, max_bytes=MIB, on_damage=damaged.append)
    assert _names(q) == ["op-0", "op-0", "op-0"]
    assert damaged == [40]
    assert any(r.levelno == logging.WARNING and "skipped" in r.getMessage() for r in caplog.records)
    q.close()


def test_cursor_write_needs_no_disk_space(tmp_path: Path) -> None:
    """An acknowledgement on a full disk must not fail: the cursor file is allocated at open."""
    q = PersistentQueue(tmp_path, max_bytes=MIB)
    assert (tmp_path / "cursor").stat().st_size >= 64
    q.close()


def test_failed_hold_log_write_leaves_no_torn_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errorgate.pipeline.hold.store as store_module

    writes = _FailingWrites(monkeypatch, store_module.os, "write")
    store = HoldStore(tmp_path)
    store.put("a", b"A" * 100)
    writes.failing = True
    with pytest.raises(StorageUnavailable):
        store.put("b", b"B" * 100)
    writes.failing = False
    store.put("c", b"C" * 100)
    store.close()
    assert dict(HoldStore(tmp_path).items()) == {"a": b"A" * 100, "c": b"C" * 100}


def test_dead_letter_store_is_bounded_oldest_first(tmp_path: Path) -> None:
    telemetry = Telemetry()
    now = [1_800_000_000.0]
    store = DeadLetterStore(tmp_path, telemetry, max_bytes=6000, max_age=3600, clock=lambda: now[0])
    ids = []
    for i in range(8):
        now[0] += 1.0  # one a second: ids (time first) sort oldest first
        ids.append(
            store.put(
                Signal.TRACES, trace_request(20, start=i * 20), reason="invalid_item", detail="", source="t"
            )
        )
    kept = [e.id for e in store.list()]
    assert kept == ids[-len(kept) :] and 0 < len(kept) < 8  # the oldest went first
    size = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert size <= 6000
    from prometheus_client import generate_latest

    text = generate_latest(telemetry.registry).decode()
    expired = metric_value(text, "errorgate_dead_letter_expired_items_total", limit="max_size_mib")
    assert expired == 20 * (8 - len(kept))
    # Age: everything is older than max_age an hour later (ids carry the real write time).
    now[0] = 4_000_000_000.0
    store.expire()
    assert store.list() == []


def test_dead_letter_store_gives_way_below_the_disk_floor(tmp_path: Path) -> None:
    """Below service.disk.min_free_mib the oldest dead letters go (counted as disk_space), never
    the one just written: the queue's live data comes first."""
    telemetry = Telemetry()
    now = [1_800_000_000.0]
    disk = 26_000  # a pretend filesystem: free space is what the store's files leave of it

    def free(_: Path) -> int:
        return disk - sum(p.stat().st_size for p in tmp_path.iterdir())

    store = DeadLetterStore(tmp_path, telemetry, min_free_bytes=20_000, clock=lambda: now[0], free_bytes=free)
    ids = []
    for i in range(12):
        now[0] += 1.0
        request = trace_request(20, start=i * 20)
        ids.append(store.put(Signal.TRACES, request, reason="invalid_item", detail="", source="t"))
        assert free(tmp_path) >= 20_000 or [e.id for e in store.list()] == [ids[-1]]
    kept = [e.id for e in store.list()]
    assert kept == ids[-len(kept) :] and 0 < len(kept) < 12
    from prometheus_client import generate_latest

    text = generate_latest(telemetry.registry).decode()
    expired = metric_value(text, "errorgate_dead_letter_expired_items_total", limit="disk_space")
    assert expired == 20 * (12 - len(kept))


def test_dead_letter_write_failure_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errorgate.delivery.dlq as dlq_module

    store = DeadLetterStore(tmp_path, Telemetry())

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dlq_module, "_fsync_dir", full)
    with pytest.raises(StorageUnavailable):
        store.put(Signal.TRACES, trace_request(2), reason="invalid_item", detail="", source="t")
    assert list(tmp_path.iterdir()) == [] and store.list() == []


def test_disk_pressure_refuses_data_and_recovers(tmp_path: Path) -> None:
    """Below service.disk.min_free_mib: UNAVAILABLE with RetryInfo, /readyz fail, gRPC health
    NOT_SERVING, errorgate_disk_pressure 1; all back to normal when space returns."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.test_reliability import batch, exporter_call

    free = [10 * MIB]
    text = gateway_yaml(tmp_path, exporter="  debug: {verbosity: basic}", exporter_id="debug")
    with running_gateway(text) as gw:
        gw.disk = DiskGuard({"data_dir": tmp_path}, 64, 0.0, gw.telemetry, free_bytes=lambda _: free[0])
        with grpc.insecure_channel(gw.grpc_endpoint) as ch:
            call = exporter_call(ch)
            health = health_pb2_grpc.HealthStub(ch)
            with pytest.raises(grpc.RpcError) as refused:
                call(batch(1, 5).SerializeToString(), timeout=5)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "service.disk.min_free_mib" in (refused.value.details() or "")
            status, checks = gw.readiness()
            assert status == "fail" and "disk" in checks
            assert metric_value(scrape(gw.metrics_endpoint), "errorgate_disk_pressure") == 1
            deadline = 50
            while (
                health.Check(health_pb2.HealthCheckRequest()).status
                != health_pb2.HealthCheckResponse.NOT_SERVING
            ):
                deadline -= 1
                assert deadline, "gRPC health never said NOT_SERVING"
                import time

                time.sleep(0.1)
            free[0] = 500 * MIB  # space returns
            call(batch(2, 5).SerializeToString(), timeout=5)
            assert gw.readiness()[0] == "pass"
            assert metric_value(scrape(gw.metrics_endpoint), "errorgate_disk_pressure") == 0
            received = metric_value(scrape(gw.metrics_endpoint), "errorgate_received_items_total")
            assert received == 5  # the refused request was not counted as received


def test_statvfs_reading_is_real(tmp_path: Path) -> None:
    guard = DiskGuard({"data_dir": tmp_path}, 1, 0.0, Telemetry())
    assert guard.low() is None
    huge = DiskGuard({"data_dir": tmp_path}, 1 << 40, 0.0, Telemetry())  # a floor no disk has
    low = huge.low()
    assert (
        low is not None
        and low[0] == "data_dir"
        and 0 < low[1] == os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    ) or low is not None
