"""A restart in the middle of a canary does not reset it: classify keeps the per-version slots
in a small file in its state directory (written every ``deploys.persist_interval`` and at
shutdown, read at start), so the restarted worker decides the verdict at the same slot as one
that never stopped. Traffic goes through classify as spans, 10 s slot by 10 s slot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from errorgate.component import HttpQuery, Processor
from tests.test_classify_support import T0, S, make_classify, new_id, run, trace_batch

PER_SLOT = 20  # requests per version per slot: min_requests (500) after 25 slots


def _slot(proc: Processor, k: int) -> None:
    """Slot k: 20 requests of 1.0 failing 1 in 20 and of 2.0 failing 2 in 20."""
    at = T0 + k * 10 + 1
    spans = [
        S("checkout", "GET /x", new_id(), new_id(), end=at + i * 0.1, version=v, error=i < failed)
        for v, failed in (("1.0", 1), ("2.0", 2))
        for i in range(PER_SLOT)
    ]
    run(proc, trace_batch(spans))


def _verdict(proc: Processor) -> str:
    answer = proc.answer(
        HttpQuery("GET", "/api/v1/verdict", {"service": "checkout", "candidate": "2.0", "baseline": "1.0"})
    )
    assert answer.status == 200, answer.body
    return str(answer.body["verdict"])


def _decided_at(procs: list[tuple[Processor, range]]) -> int | None:
    for proc, slots in procs:
        for k in slots:
            _slot(proc, k)
            if _verdict(proc) != "inconclusive":
                return k
    return None


def test_a_restart_mid_window_decides_at_the_same_slot(tmp_path: Path) -> None:
    straight, _ = make_classify(tmp_path / "straight")
    expected = _decided_at([(straight, range(60))])
    assert expected is not None and expected >= 24  # decided once both versions have 500 requests

    before, _ = make_classify(tmp_path / "restarted")
    assert _decided_at([(before, range(12))]) is None
    before.shutdown()  # the worker stops mid-window...
    after, _ = make_classify(tmp_path / "restarted")  # ...and a new one starts on the same data dir
    assert _decided_at([(after, range(12, 60))]) == expected
    assert _verdict(after) == _verdict(straight) == "fail"

    # Without the saved state the canary starts over: decided later (or never in the window).
    forgetful, _ = make_classify(tmp_path / "forgetful")
    _decided_at([(forgetful, range(12))])
    forgetful.shutdown()
    (tmp_path / "forgetful" / "state" / "classify" / "deploys.json").unlink()
    fresh, _ = make_classify(tmp_path / "forgetful")
    later = _decided_at([(fresh, range(12, 60))])
    assert later is None or later > expected


def test_the_state_is_also_written_while_running(tmp_path: Path) -> None:
    """A crash (no shutdown) loses at most persist_interval of slots."""
    proc, _ = make_classify(tmp_path, deploys={"persist_interval": "5s"})
    for k in range(3):
        _slot(proc, k)
    proc.poll(1000.0)
    proc.poll(1006.0)  # past the interval: written
    saved = json.loads((tmp_path / "state" / "classify" / "deploys.json").read_text())
    assert {(v["service"], v["version"]) for v in saved["versions"]} == {
        ("checkout", "1.0"),
        ("checkout", "2.0"),
    }
    crashed, _ = make_classify(tmp_path)  # never shut down: starts from the last write
    answer = crashed.answer(
        HttpQuery("GET", "/api/v1/verdict", {"service": "checkout", "candidate": "2.0", "baseline": "1.0"})
    )
    assert answer.body["evidence"]["requests"] == {"candidate": 3 * PER_SLOT, "baseline": 3 * PER_SLOT}


def test_an_unreadable_state_file_starts_empty_and_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state" / "classify" / "deploys.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    caplog.set_level(logging.WARNING)
    proc, _ = make_classify(tmp_path)
    assert proc.answer(HttpQuery("GET", "/api/v1/verdict", {"service": "checkout"})).status == 404
    assert any(str(path) in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_persistence_can_be_turned_off(tmp_path: Path) -> None:
    proc, _ = make_classify(tmp_path, deploys={"persist_interval": "0s"})
    _slot(proc, 0)
    proc.poll(1000.0)
    proc.shutdown()
    assert not (tmp_path / "state" / "classify" / "deploys.json").exists()
