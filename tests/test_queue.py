"""Sending queues: order, restart, torn tail, SIGKILL, bounds, at-rest codec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from errorgate.delivery.diskqueue import PersistentQueue
from errorgate.delivery.queue import MemoryQueue, QueueFull, QueueInUse
from errorgate.errors import Backpressure
from errorgate.signals import Signal, count_items
from tests.support.otlp_sink import log_request, trace_request

ROOT = Path(__file__).resolve().parent.parent


def _names(record_request: object) -> list[str]:
    return [s.name for rs in record_request.resource_spans for ss in rs.scope_spans for s in ss.spans]  # type: ignore[attr-defined]


def _put_spans(q: PersistentQueue | MemoryQueue, first: int, count: int) -> None:
    for i in range(first, first + count):
        req = trace_request(1, start=i)
        q.put(Signal.TRACES, req, 1)


def _drain(q: PersistentQueue | MemoryQueue, ack: bool = True) -> list[str]:
    out = []
    while (rec := q.get(timeout=0.05)) is not None:
        out.extend(_names(rec.to_request()))
        if ack:
            q.ack(rec.seq)
    return out


def test_persistent_queue_keeps_order_across_restart(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, max_bytes=10 * 1048576, segment_bytes=2048)
    _put_spans(q, 0, 50)
    for _ in range(20):
        rec = q.get(timeout=1)
        assert rec is not None
        q.ack(rec.seq)
    assert q.items == 30
    q.close()

    q2 = PersistentQueue(tmp_path, max_bytes=10 * 1048576, segment_bytes=2048)
    assert (q2.items, len(q2)) == (30, 30)
    _put_spans(q2, 50, 5)
    assert _drain(q2) == [f"op-{i}" for i in range(20, 55)]
    assert (q2.items, q2.nbytes, len(q2)) == (0, 0, 0)
    q2.close()
    # Fully acknowledged segments are deleted: only the segment being written remains.
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_unacknowledged_records_are_delivered_again_after_restart(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, max_bytes=1048576)
    _put_spans(q, 0, 6)
    recs = [q.get(timeout=1) for _ in range(4)]
    # Out-of-order acks: 0, 1 and 3 are done, 2 is still in flight when the process stops.
    for r in (recs[0], recs[1], recs[3]):
        assert r is not None
        q.ack(r.seq)
    q.close()
    q2 = PersistentQueue(tmp_path, max_bytes=1048576)
    # The cursor only passes the contiguous acknowledged prefix: 2 and 3 come again (at-least-once).
    assert _drain(q2) == ["op-2", "op-3", "op-4", "op-5"]
    q2.close()


def test_torn_tail_is_ignored_and_nothing_else_lost(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, max_bytes=1048576)
    _put_spans(q, 0, 10)
    q.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    full = seg.read_bytes()
    # A crash mid-write: half of an 11th record.
    frame_len = len(full) // 10
    with open(seg, "ab") as f:
        f.write(full[:frame_len][: frame_len // 2])
    q2 = PersistentQueue(tmp_path, max_bytes=1048576)
    assert q2.items == 10
    _put_spans(q2, 10, 2)
    assert _drain(q2) == [f"op-{i}" for i in range(12)]
    q2.close()


def test_corrupted_record_is_not_delivered_garbled(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, max_bytes=1048576)
    _put_spans(q, 0, 4)
    q.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    frame_len = len(data) // 4
    data[frame_len * 2 + 20] ^= 0xFF  # flip a byte inside record 3's payload
    seg.write_bytes(bytes(data))
    damaged: list[int] = []
    q2 = PersistentQueue(tmp_path, max_bytes=1048576, on_damage=damaged.append)
    # Exactly the damaged record is skipped (and reported); the one after it is kept.
    assert _drain(q2) == ["op-0", "op-1", "op-3"]
    assert damaged == [frame_len]
    q2.close()


@pytest.mark.parametrize("kind", ["memory", "persistent"])
def test_full_queue_raises_backpressure_and_recovers(tmp_path: Path, kind: str) -> None:
    one = trace_request(10)
    size = one.ByteSize()
    q = MemoryQueue((size + 13) * 3) if kind == "memory" else PersistentQueue(tmp_path, (size + 13) * 3)
    for _ in range(3):
        q.put(Signal.TRACES, one, 10)
    assert not q.has_room(size)
    with pytest.raises(Backpressure) as exc:
        q.put(Signal.TRACES, one, 10)
    assert isinstance(exc.value, QueueFull) and exc.value.retry_after > 0
    assert q.items == 30  # the refused record did not sneak in
    rec = q.get(timeout=1)
    assert rec is not None
    # Handed out but not acknowledged: still occupies space.
    assert not q.has_room(size)
    q.ack(rec.seq)
    assert q.has_room(size)
    q.put(Signal.TRACES, one, 10)
    assert q.items == 30
    q.close()


def test_oversize_record_names_the_setting(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, 1000)
    with pytest.raises(QueueFull, match=r"sending_queue\.max_size_mib"):
        q.put(Signal.TRACES, trace_request(100), 100)
    q.close()


class _XorCodec:
    def encode(self, data: bytes) -> bytes:
        return b"X1" + bytes(b ^ 0x5A for b in data)

    def decode(self, data: bytes) -> bytes:
        if not data.startswith(b"X1"):
            raise ValueError("bad magic")
        return bytes(b ^ 0x5A for b in data[2:])


class _RefusingCodec(_XorCodec):
    def decode(self, data: bytes) -> bytes:
        raise ValueError("wrong key")


def test_codec_encodes_records_at_rest(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, 1048576, _XorCodec())
    q.put(Signal.LOGS, log_request(3, body="secret-value"), 3)
    q.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("*.seg"))
    assert b"secret-value" not in raw
    q2 = PersistentQueue(tmp_path, 1048576, _XorCodec())
    rec = q2.get(timeout=1)
    assert rec is not None and rec.signal is Signal.LOGS and rec.items == 3
    assert [r.body.string_value for r in rec.to_request().resource_logs[0].scope_logs[0].log_records] == [  # type: ignore[union-attr]
        "secret-value-0",
        "secret-value-1",
        "secret-value-2",
    ]
    q2.close()
    q3 = PersistentQueue(tmp_path, 1048576, _RefusingCodec())
    rec3 = q3.get(timeout=1)
    assert rec3 is not None and rec3.corrupt and rec3.data is None and rec3.items == 3
    q3.close()


def test_memory_queue_hands_out_in_order_and_waits_for_acks() -> None:
    q = MemoryQueue(1048576)
    _put_spans(q, 0, 5)
    recs = [q.get(timeout=1) for _ in range(5)]
    assert [_names(r.to_request())[0] for r in recs if r] == [f"op-{i}" for i in range(5)]
    assert q.get(timeout=0.01) is None
    assert not q.wait_empty(0.01)
    for r in recs:
        assert r is not None
        q.ack(r.seq)
    assert q.wait_empty(0.01) and q.items == 0 and q.nbytes == 0


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from errorgate.delivery.diskqueue import PersistentQueue
    from errorgate.signals import Signal
    from tests.support.otlp_sink import trace_request

    q = PersistentQueue(Path(sys.argv[1]), max_bytes=64 * 1048576, segment_bytes=16384)
    i = 0
    while True:
        q.put(Signal.TRACES, trace_request(3, start=i * 3), 3)
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


def test_sigkill_mid_enqueue_loses_no_returned_put(tmp_path: Path) -> None:
    qdir = tmp_path / "q"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(qdir)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    confirmed = -1
    for line in proc.stdout:
        confirmed = int(line)
        if confirmed >= 1500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Lines the child wrote before dying but we had not read yet are confirmations too.
    for line in proc.stdout.read().splitlines():
        confirmed = int(line)
    q = PersistentQueue(qdir, max_bytes=64 * 1048576, segment_bytes=16384)
    got = []
    while (rec := q.get(timeout=0.01)) is not None:
        req = rec.to_request()
        assert count_items(req) == rec.items == 3
        got.append(int(_names(req)[0].split("-")[1]) // 3)
        q.ack(rec.seq)
    q.close()
    # Every put that returned is there, in order, once; at most the one in flight besides.
    assert got[: confirmed + 1] == list(range(confirmed + 1))
    assert len(got) in (confirmed + 1, confirmed + 2)


def test_second_open_of_a_queue_directory_is_refused(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, 1048576)
    with pytest.raises(QueueInUse, match=r"sending_queue\.storage"):
        PersistentQueue(tmp_path, 1048576)
    q.close()
    PersistentQueue(tmp_path, 1048576).close()  # released on close


def test_torn_cursor_slot_falls_back_to_the_previous_position(tmp_path: Path) -> None:
    q = PersistentQueue(tmp_path, 1048576)
    _put_spans(q, 0, 5)
    for _ in range(3):
        rec = q.get(timeout=1)
        assert rec is not None
        q.ack(rec.seq)
    q.close()
    cursor = bytearray((tmp_path / "cursor").read_bytes())
    cursor[32 + 8] ^= 0xFF  # the newest slot (generation 3 lives in slot 1) is torn
    (tmp_path / "cursor").write_bytes(bytes(cursor))
    q2 = PersistentQueue(tmp_path, 1048576)
    # At-least-once: the older slot says two were acknowledged, so the third comes again.
    assert _drain(q2) == ["op-2", "op-3", "op-4"]
    q2.close()


@pytest.mark.parametrize("persistent", [False, True])
def test_wait_backlog_sleeps_until_enough_items_wait(tmp_path: Path, persistent: bool) -> None:
    q = PersistentQueue(tmp_path / "q", 1 << 20) if persistent else MemoryQueue(1 << 20)
    began = time.monotonic()
    assert q.wait_backlog(5, 0.05)  # nothing arrives: returns after the timeout
    assert time.monotonic() - began >= 0.04

    def put_later() -> None:
        for _ in range(3):
            time.sleep(0.02)
            q.put(Signal.TRACES, trace_request(2), 2)

    t = threading.Thread(target=put_later)
    t.start()
    began = time.monotonic()
    assert q.wait_backlog(5, 5.0)  # woken by the third put (6 items), not by the timeout
    assert time.monotonic() - began < 2.0
    t.join()
    records = [q.get(timeout=0) for _ in range(3)]
    assert all(r is not None for r in records)
    assert q.wait_backlog(1, 0.0)  # nothing left, no wait
    q.close()
    assert not q.wait_backlog(1, 5.0)  # closed: at once
