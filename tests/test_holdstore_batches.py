"""HoldStore batching and segments: put_many is one durable record, values live on disk only,
released segments vanish without being read, and a lingering item survives being copied forward."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from errorgate.pipeline.hold.store import HoldStore


def _segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("hold*.log"))


def test_put_many_is_durable_and_reopens(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    s.put_many([("a", b"1"), ("b", b"2"), ("c", b"3")])
    s.put("a", b"4")  # a later single put replaces a batched one
    s.delete(["b"])
    s.put_many([])
    s.close()
    assert dict(HoldStore(tmp_path).items()) == {"a": b"4", "c": b"3"}


def test_torn_put_many_is_ignored_as_a_whole(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    s.put("kept", b"x")
    s.put_many([(f"k{i}", b"v" * 100) for i in range(10)])
    s.close()
    log = tmp_path / "hold.log"
    log.write_bytes(log.read_bytes()[:-5])  # the batch's single record is torn
    reopened = HoldStore(tmp_path)
    assert dict(reopened.items()) == {"kept": b"x"}
    reopened.put_many([("after", b"y")])
    reopened.close()
    assert dict(HoldStore(tmp_path).items()) == {"kept": b"x", "after": b"y"}


def test_values_are_not_kept_in_memory(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    value = b"z" * 100_000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(100):  # 10 MB held
            s.put_many([(f"k{i}", value)])
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(s) == 100
    assert after - before < 1_000_000  # keys and sizes only, not the 10 MB
    assert dict(s.items())["k42"] == value
    s.close()


def test_released_segments_are_deleted_and_disk_stays_bounded(tmp_path: Path) -> None:
    s = HoldStore(tmp_path, segment_bytes=64 * 1024)
    value = b"v" * 1000
    for i in range(2000):  # ~2 MB through 64 KiB segments, at most 10 items live
        s.put_many([(f"k{i}", value)])
        if i >= 10:
            s.delete([f"k{i - 10}"])
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("hold*.log"))
    assert on_disk < 3 * 64 * 1024
    assert len(_segments(tmp_path)) <= 3
    s.close()
    assert sorted(k for k, _ in HoldStore(tmp_path).items()) == sorted(f"k{i}" for i in range(1990, 2000))


def test_lingering_item_is_copied_forward_and_survives_reopen(tmp_path: Path) -> None:
    s = HoldStore(tmp_path, segment_bytes=64 * 1024)
    s.put("old", b"still held")
    value = b"v" * 10_000
    for i in range(1000):  # ~10 MB of short-lived items behind the one that lingers
        s.put_many([(f"k{i}", value)])
        s.delete([f"k{i}"])
    # The first segment is gone (its item was copied forward); disk is bounded by the slack.
    assert "hold-00000001.log" not in _segments(tmp_path)
    assert s.log_bytes < 2 * 10_000 + 4 * 1048576 + 2 * 64 * 1024
    s.close()
    reopened = HoldStore(tmp_path, segment_bytes=64 * 1024)
    assert dict(reopened.items()) == {"old": b"still held"}
    reopened.delete(["old"])
    reopened.close()
    assert dict(HoldStore(tmp_path).items()) == {}


def test_delete_tolerates_repeated_and_unknown_keys(tmp_path: Path) -> None:
    s = HoldStore(tmp_path)
    s.put_many([("a", b"1"), ("b", b"2")])
    s.delete(["a", "a", "nope"])
    assert len(s) == 1
    s.close()
    assert dict(HoldStore(tmp_path).items()) == {"b": b"2"}
