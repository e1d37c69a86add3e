"""Shared late-span decisions and incident candidates across replicas (the ``redis`` extension),
against a real redis-server.

Split by trace id over three replicas, a span arriving after its trace was decided (a replica
restarted, traffic re-routed) can land on a replica that never saw the trace: with shared
decisions it follows the decision, adjusted count included; an incident whose errors are spread
over the replicas is counted globally and opened once. Redis killed mid-run: the replicas fall
back to their own state (counted), nothing raises, and they share again once it is back."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from errorgate.component import EXTENSIONS
from errorgate.extensions import shared_state
from errorgate.extensions.shared_state import RedisStateExtension
from errorgate.telemetry import Telemetry
from tests.support.redis_server import RedisServer, redis_fixtures, state_extension, state_processor
from tests.test_classify_scenarios import _cascade_trace
from tests.test_classify_support import T0, S, run, total, trace_batch

EXTENSIONS.register(shared_state.factory)  # the installed metadata may predate the entry point

ADJ = "errorgate.sampling.adjusted_count"


redis_server, server = redis_fixtures("shared-late")


# ------------------------------------------------------------------ late spans, three replicas

# Healthy traces are never kept (so a late span kept can only follow its trace's decision); one
# error trace per fingerprint and minute is kept, the dropped ones carried onto the next kept.
SAMPLE = {"healthy_keep_probability": 0, "flood": {"first_n_per_minute": 1, "rate_per_second_after": 0}}


def error_trace(trace: int, at: float) -> list[S]:
    return [
        S("checkout", "POST /pay", trace, 1, end=at),
        S("payments", "POST /charge", trace, 2, parent=1, end=at - 0.01, error=True,
          attrs={"errorgate.error.fingerprint": "fp-ledger"}),
    ]  # fmt: skip


def late_span_replay(
    tmp_path: Path, ext: RedisStateExtension | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Three ``sample`` replicas: error traces 1 and 2 (minute 0; 2 is thinned away) and 3
    (minute 1: kept, standing for 2 and itself) go to replicas 0, 1 and 2; trace 3's late span
    goes to replica 1. The attributes of trace 3's error span and of its late span (empty: dropped)."""
    replicas = [state_processor("sample", tmp_path / str(i), ext, **SAMPLE) for i in range(3)]
    run(replicas[0], trace_batch(error_trace(1, T0 + 1), complete_traces=True))
    run(replicas[1], trace_batch(error_trace(2, T0 + 2), complete_traces=True))
    decided = run(replicas[2], trace_batch(error_trace(3, T0 + 61), complete_traces=True))
    late = run(replicas[1], trace_batch([S("checkout", "publish receipt", 3, 9, parent=1, end=T0 + 75)]))
    return decided.get((3, 2), {}), late.get((3, 9), {})


def test_late_span_on_another_replica_follows_the_shared_decision(
    tmp_path: Path, server: RedisServer
) -> None:
    ext = state_extension(server)
    decided, late = late_span_replay(tmp_path / "shared", ext)
    # Kept, standing for the thinned trace 2 (seen by another replica) and itself.
    assert decided[ADJ] == 2
    assert late[ADJ] == decided[ADJ]  # the late span is kept with its trace, same adjusted count
    assert server.client().ttl(b"errorgate:sd:" + (3).to_bytes(16, "big")) > 0  # ages out


def test_without_shared_state_the_late_span_is_lost(tmp_path: Path) -> None:
    decided, late = late_span_replay(tmp_path / "local", None)
    assert decided[ADJ] == 1  # replica 2 never saw trace 2: its count is lost
    assert late == {}  # replica 1 never saw trace 3's decision: its late span is dropped


def random_sample_batches(rng: random.Random, n: int) -> list[tuple[list[S], bool]]:
    """Whole traces (healthy, slow, failing; a few fingerprints) and late spans of earlier traces
    (healthy or failing), in telemetry order over a few minutes: (spans, complete)."""
    batches: list[tuple[list[S], bool]] = []
    trace = 0
    for step in range(n):
        at = T0 + step * 7
        if trace and rng.random() < 0.3:
            spans = []
            for _ in range(rng.randint(1, 4)):
                t = rng.randint(1, trace)
                fp = rng.choice(("fp-a", "fp-b", ""))
                spans.append(
                    S("checkout", "late", t, 1000 + step, parent=1, end=at, error=bool(fp) and rng.random() < 0.3,
                      attrs={"errorgate.error.fingerprint": fp} if fp else {})
                )  # fmt: skip
            batches.append((spans, False))
            continue
        spans = []
        for _ in range(rng.randint(1, 6)):
            trace += 1
            roll = rng.random()
            if roll < 0.5:
                spans += error_trace(trace, at + rng.random() * 5)
                spans[-1].attrs["errorgate.error.fingerprint"] = rng.choice(("fp-a", "fp-b"))
            elif roll < 0.6:  # slow: kept for its latency
                spans += [
                    S("checkout", "slow", trace, 1, end=at + 3),
                    S("db", "q", trace, 2, parent=1, end=at),
                ]
            else:
                spans.append(S("checkout", "GET /", trace, 1, end=at))
        batches.append((spans, True))
    return batches


def test_decision_script_answers_as_the_local_sampler_does(tmp_path: Path, server: RedisServer) -> None:
    """One replica, the same batches: its decisions with the shared state equal those without."""
    settings = {
        "healthy_keep_probability": 0.25,
        "flood": {"first_n_per_minute": 2, "rate_per_second_after": 0.2},
    }
    local = state_processor("sample", tmp_path / "local", None, **settings)
    ext = state_extension(server)
    shared = state_processor("sample", tmp_path / "shared", ext, **settings)
    for spans, complete in random_sample_batches(random.Random(11), 150):
        expected = run(local, trace_batch(spans, complete_traces=complete))
        assert run(shared, trace_batch(spans, complete_traces=complete)) == expected
    assert ext.shared and ext.calls > 50  # the shared path answered (not the fallback)


# ------------------------------------------------------------------ incident candidates


def incident_replay(
    tmp_path: Path, ext: RedisStateExtension | None
) -> tuple[float, set[str], list[Telemetry]]:
    """A database outage cascading through the order path: three failing traces (``min_errors``
    is 3), one to each of three ``classify`` replicas, beside healthy traffic. Incidents opened
    (summed over the replicas) and the incident ids the failing spans carry."""
    telemetries = [Telemetry() for _ in range(3)]
    replicas = [state_processor("classify", tmp_path / str(i), ext, telemetries[i]) for i in range(3)]
    ids: set[str] = set()
    for i in range(3):
        cascade, _ = _cascade_trace(T0 + 10 + i * 5, failing=True)
        healthy, _ = _cascade_trace(T0 + 11 + i * 5, failing=False)
        out = run(replicas[i], trace_batch(cascade + healthy, complete_traces=True))
        ids |= {a["errorgate.incident.id"] for a in out.values() if "errorgate.incident.id" in a}
    opened = sum(total(t, "errorgate_incidents_total") for t in telemetries)
    return opened, ids, telemetries


def test_an_incident_spread_over_three_replicas_opens_once(tmp_path: Path, server: RedisServer) -> None:
    opened, ids, telemetries = incident_replay(tmp_path, state_extension(server))
    assert opened == 1
    assert len(ids) == 1  # the failing spans name the one incident
    # The replica that saw the third failing trace opened it, naming the failing origin.
    assert total(telemetries[2], "errorgate_incidents_total", origin_service="orders-db") == 1


def test_without_shared_state_no_replica_sees_the_incident(tmp_path: Path) -> None:
    opened, ids, _ = incident_replay(tmp_path, None)
    assert opened == 0 and not ids  # each replica saw one failing trace of the three needed


def random_incident_traffic(
    rng: random.Random, n: int
) -> Iterator[list[tuple[float, frozenset[str], frozenset[str], frozenset[str]]]]:
    """Batches of trace observations (time, services, failing services, origins) in telemetry
    order: healthy traffic and bursts of failures from a few origins over overlapping services."""
    services = ["web", "cart", "pay", "db", "mq", "auth"]
    at = T0
    for _ in range(n):
        batch = []
        for _ in range(rng.randint(1, 8)):
            at += rng.choice((0.5, 1, 3, 20))
            touched = frozenset(rng.sample(services, rng.randint(1, 5)))
            if rng.random() < 0.45:
                failing = frozenset(rng.sample(sorted(touched), rng.randint(1, len(touched))))
                origins = frozenset([rng.choice(("db", "mq", "auth"))])
                batch.append((at, touched, failing, origins))
            else:
                batch.append((at, touched, frozenset(), frozenset()))
        yield batch


def test_incident_script_answers_as_the_tracker_does(server: RedisServer) -> None:
    from errorgate.processors.classification.incidents import IncidentTracker
    from errorgate.processors.errorstate.remote import RedisIncidents

    reference = IncidentTracker(60, 3, 2)
    tracker = IncidentTracker(60, 3, 2)
    shared = RedisIncidents(state_extension(server), tracker, "classify")
    opened = closed = 0
    for batch in random_incident_traffic(random.Random(5), 200):
        for observation in batch:
            reference.observe(*observation)
            tracker.observe(*observation)
        window = shared.window()
        assert window is not None
        expected, got = reference.evaluate(), tracker.evaluate(window)
        assert [(i.id, i.origin_service, i.opened_at, i.services) for i in got.opened] == [
            (i.id, i.origin_service, i.opened_at, i.services) for i in expected.opened
        ]
        assert [i.id for i in got.closed] == [i.id for i in expected.closed]
        # Same incidents, members and ranking (the scores come from the same counts: equal).
        assert {k: (v.services, v.ranking) for k, v in tracker.active.items()} == {
            k: (v.services, v.ranking) for k, v in reference.active.items()
        }
        opened += len(expected.opened)
        closed += len(expected.closed)
    assert opened >= 3 and closed >= 2  # the traffic opened and closed incidents


# ------------------------------------------------------------------ Redis down, Redis back


def test_redis_killed_mid_run_falls_back_counted_and_recovers(
    tmp_path: Path, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    telemetries = [Telemetry() for _ in range(3)]
    exts = [state_extension(server, t, timeout="50ms", retry_interval=0) for t in telemetries]
    samplers = [
        state_processor("sample", tmp_path / f"s{i}", exts[i], telemetries[i], **SAMPLE) for i in range(3)
    ]
    classifiers = [state_processor("classify", tmp_path / f"c{i}", exts[i], telemetries[i]) for i in range(3)]

    def late_span_kept(trace: int, at: float) -> bool:
        decided = run(samplers[0], trace_batch(error_trace(trace, at), complete_traces=True))
        assert decided  # an error trace, first of its minute: kept
        late = run(samplers[1], trace_batch([S("checkout", "late", trace, 9, parent=1, end=at + 12)]))
        return bool(late)

    def incident_ids(start: float) -> set[str]:
        """A quiet moment (the earlier incident closes), then three failing traces, one each."""
        ids = set()
        for i in range(3):
            quiet, _ = _cascade_trace(start - 10, failing=False)
            run(classifiers[i], trace_batch(quiet, complete_traces=True))
        for i in range(3):
            cascade, _ = _cascade_trace(start + i * 5, failing=True)
            out = run(classifiers[i], trace_batch(cascade, complete_traces=True))
            ids |= {a["errorgate.incident.id"] for a in out.values() if "errorgate.incident.id" in a}
        return ids

    def opened() -> float:
        return sum(total(t, "errorgate_incidents_total") for t in telemetries)

    assert late_span_kept(101, T0) and len(incident_ids(T0)) == 1 and opened() == 1  # shared
    server.stop()
    # Down: every replica answers from its own state, nothing raises, each batch is counted.
    assert not late_span_kept(102, T0 + 300)
    assert not incident_ids(T0 + 300) and opened() == 1  # each replica saw one failing trace of three
    assert not any(e.shared for e in exts)
    fallbacks = [total(t, "errorgate_shared_state_fallbacks_total") for t in telemetries]
    assert fallbacks[0] >= 2 and fallbacks[1] >= 2 and fallbacks[2] >= 1
    server.start()  # back, empty (no persistence)
    assert (
        late_span_kept(103, T0 + 600) and len(incident_ids(T0 + 600)) == 1 and opened() == 2
    )  # shared again
    assert all(e.shared for e in exts)
    messages = [r.getMessage() for r in caplog.records if r.name == "errorgate.shared_state"]
    assert sum("unavailable" in m for m in messages) == 3 and sum("is back" in m for m in messages) == 3
