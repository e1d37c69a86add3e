"""Shared error state across replicas (the ``redis`` extension), against a real redis-server.

Replicas behind a trace-id load balancer each see 1/N of every error group. Here the labelled
scenarios (a transient blip, a persistent payments bug, a flapping dependency, a database
cascade) are split by trace id over three ``classify`` instances in-process: without shared
state the persistent failure is misread; with it, every span's kind, origin and severity equal
one replica's given the same batches in the same order. Also: the Lua scripts answer exactly as
the in-process trackers do, Redis killed mid-run falls back (counted) and comes back, and a
batch costs one round trip."""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from errorgate.component import EXTENSIONS, PROCESSORS, ComponentContext, Extensions, Processor
from errorgate.config import ConfigError
from errorgate.extensions import shared_state
from errorgate.extensions.shared_state import RedisConfig, RedisStateExtension
from errorgate.processors.classification.episodes import EpisodeParams, EpisodeTracker
from errorgate.processors.classification.severity import BurnRates
from errorgate.processors.errorstate import LocalErrorState, LocalFloodState
from errorgate.processors.errorstate.remote import RedisErrorState, RedisFloodState
from errorgate.processors.sampling.flood import FloodLimiter
from errorgate.telemetry import Telemetry
from tests.support.redis_server import RedisServer, redis_fixtures, state_extension, state_processor
from tests.test_classify_scenarios import _cascade_trace
from tests.test_classify_support import CLIENT, T0, S, run, total, trace_batch

EXTENSIONS.register(shared_state.factory)  # the installed metadata may predate the entry point


redis_server, server = redis_fixtures("shared-state")


def classify(tmp_path: Path, ext: RedisStateExtension | None) -> tuple[Processor, Telemetry]:
    telemetry = Telemetry()
    return state_processor("classify", tmp_path, ext, telemetry), telemetry


# ------------------------------------------------------------------ the scripts equal the trackers


def test_episode_script_answers_as_the_tracker_does(server: RedisServer) -> None:
    rng = random.Random(7)
    params = EpisodeParams()
    reference = EpisodeTracker(params)
    state = RedisErrorState(
        state_extension(server), LocalErrorState(EpisodeTracker(params), BurnRates()), "classify"
    )
    minute = 0
    for _ in range(120):  # batches
        batch = []
        for _ in range(rng.randint(1, 6)):
            minute += rng.choice((0, 0, 1, 1, 2, 3, 7, 40))
            late = rng.random() < 0.1
            ts = T0 + 60 * (minute - (rng.randint(1, 25) if late else 0)) + rng.random() * 59
            batch.append(
                (
                    rng.choice("ab"),
                    rng.choice(("fp1", "fp2", "fp3")),
                    ts,
                    rng.random() < 0.3,
                    rng.random() < 0.1,
                )
            )
        seen, _ = state.classify([], batch, set())
        expected = [
            reference.observe(s, fp, ts, deterministic=d, retry_failed=r) for s, fp, ts, d, r in batch
        ]
        assert [(o.kind, o.new_episode, o.new_fingerprint) for o in seen] == [
            (o.kind, o.new_episode, o.new_fingerprint) for o in expected
        ]
        assert [o.flap_share for o in seen] == pytest.approx([o.flap_share for o in expected])
    assert state.shared.shared and state.shared.round_trips == 120


def test_burn_and_flood_scripts_answer_as_the_trackers_do(server: RedisServer) -> None:
    rng = random.Random(3)
    reference = BurnRates()
    ext = state_extension(server)
    state = RedisErrorState(ext, LocalErrorState(EpisodeTracker(), BurnRates()), "classify")
    limiter = FloodLimiter(3, 0.5)
    floods = RedisFloodState(ext, LocalFloodState(FloodLimiter(3, 0.5)), "sample")
    second = int(T0)
    for _ in range(60):
        records = []
        for _ in range(rng.randint(1, 4)):
            second += rng.randint(0, 400)
            records.append(
                (rng.choice(("checkout", "catalog")), float(second), rng.randint(1, 50), rng.randint(0, 5))
            )
        for r in records:
            reference.record(*r)
        _, burn = state.classify(records, [], {"checkout", "catalog", "never-seen"})
        for service in ("checkout", "catalog", "never-seen"):
            for rule in reference.rules:
                for window in (rule.short_window, rule.long_window):
                    assert burn.burn(service, window, 0.999) == reference.burn(service, window, 0.999)
        admits = [
            (rng.choice(("f1", "f2")), float(second) + rng.random() * 30) for _ in range(rng.randint(1, 8))
        ]
        assert floods.admit(admits) == [limiter.admit(fp, at) for fp, at in admits]


# ------------------------------------------------------------------ three replicas, split by trace id


def _span_error(service: str, route: str, at: float, message: str, status: int = 500) -> S:
    return S(
        service, route, new_id(), new_id(), end=at, error=True,
        attrs={"http.route": route, "http.response.status_code": status},
        exception=("RuntimeError", message, ""),
    )  # fmt: skip


# The scenario's ids restart at 1 for every call: the split by trace id (and so what each
# replica sees) must not depend on how many ids earlier tests in the session took.
_scenario_ids = itertools.count(1)


def new_id() -> int:
    return next(_scenario_ids)


def scenario_batches() -> list[list[S]]:
    """Labelled traffic in 20 s batches of whole traces over 16 minutes: healthy requests of
    every service, a one-minute transient blip (catalog), a payments bug failing 4 times a
    minute from minute 2 on (persistent), recommendations failing every other minute
    (intermittent), and a database outage cascading through three services (minutes 9-10)."""
    global _scenario_ids
    _scenario_ids = itertools.count(1)
    batches: list[list[S]] = []
    for step in range(16 * 3):
        at = T0 + step * 20
        minute = step // 3
        spans: list[S] = []
        for i in range(12):
            for service, route in (
                ("catalog", "GET /items"),
                ("payments", "POST /charge"),
                ("frontend", "GET /"),
            ):
                spans.append(
                    S(service, route, new_id(), new_id(), end=at + i * 1.5, attrs={"http.route": route})
                )
        if minute == 4:
            spans.append(
                _span_error(
                    "catalog", "GET /items", at + 3, f"timed out after {step}s waiting for 10.0.0.{step}", 504
                )
            )
        if minute >= 2:
            for i in range(1 + (step % 3 == 0)):  # 4 a minute
                spans.append(
                    _span_error(
                        "payments", "POST /charge", at + 5 + i, f"ledger entry missing for order {step}-{i}"
                    )
                )
        if minute % 2 == 0 and step % 3 == 1:
            t, root, client = new_id(), new_id(), new_id()
            spans += [
                S("frontend", "GET /", t, root, end=at + 9, attrs={"http.route": "/"}),
                S("frontend", "GET", t, client, parent=root, kind=CLIENT, end=at + 8.9,
                  attrs={"http.response.status_code": 503, "server.address": "recommendations"}),
            ]  # fmt: skip
        if minute in (9, 10):
            for i in range(2):
                cascade, _ = _cascade_trace(at + 2 + i * 7, failing=True)
                spans += cascade
        elif minute in (7, 8):
            cascade, _ = _cascade_trace(at + 2, failing=False)
            spans += cascade
        batches.append(spans)
    return batches


Outcome = dict[tuple[int, int], tuple[Any, ...]]


def part_of(trace: int, n: int = 3) -> int:
    """The replica a trace id hashes to (as a load balancer's hash ring spreads them)."""
    return hashlib.blake2b(trace.to_bytes(16, "big"), digest_size=8).digest()[0] % n


def replay(replicas: list[Processor], batches: list[list[S]], n_split: int = 3) -> Outcome:
    """Each batch split by trace id into ``n_split`` parts, part i to replica i % len(replicas),
    in order; every failing span's (kind, origin, origin service, severity)."""
    outcome: Outcome = {}
    for spans in batches:
        for part in range(n_split):
            mine = [s for s in spans if part_of(s.trace, n_split) == part]
            if not mine:
                continue
            out = run(replicas[part % len(replicas)], trace_batch(mine, complete_traces=True))
            for key, a in out.items():
                if "errorgate.error.kind" in a:
                    outcome[key] = (
                        a["errorgate.error.kind"],
                        a.get("errorgate.error.origin"),
                        a.get("errorgate.error.origin_service"),
                        a["errorgate.severity"],
                    )
    return outcome


def kinds_of(outcome: Outcome, service_spans: set[tuple[int, int]]) -> Counter[str]:
    return Counter(v[0] for k, v in outcome.items() if k in service_spans)


def test_three_replicas_classify_as_one_only_with_shared_state(tmp_path: Path, server: RedisServer) -> None:
    batches = scenario_batches()
    payments = {
        (s.trace, s.span)
        for spans in batches
        for s in spans
        if s.error and s.service == "payments" and s.name == "POST /charge" and s.exception
    }
    one = replay([classify(tmp_path / "one", None)[0]], batches)
    local = replay([classify(tmp_path / f"local{i}", None)[0] for i in range(3)], batches)
    shared = replay(
        [classify(tmp_path / f"shared{i}", state_extension(server))[0] for i in range(3)], batches
    )
    # One replica: the payments bug reads persistent once it has lasted 5 minutes.
    assert set(v[0] for v in one.values()) == {"transient", "intermittent", "persistent", "cascading"}
    assert kinds_of(one, payments)["persistent"] >= 40
    # Three replicas, each its own state: the same failure reads intermittent (the state matters).
    assert kinds_of(local, payments)["persistent"] < kinds_of(one, payments)["persistent"] / 2
    assert local != one
    # Three replicas sharing the state in Redis: every kind, origin and severity as one replica's.
    assert shared == one


# ------------------------------------------------------------------ Redis down, Redis back


def test_redis_killed_mid_run_falls_back_counted_and_recovers(
    tmp_path: Path, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = Telemetry()
    ext = state_extension(server, telemetry, timeout="50ms", retry_interval=0)
    proc, _ = classify(tmp_path, ext)
    batches = scenario_batches()
    spans_in = spans_out = 0
    for i, spans in enumerate(batches):
        if i == 10:
            server.stop()
        if i == 25:
            server.start()
        out = run(proc, trace_batch(spans, complete_traces=True))
        spans_in += len(spans)
        spans_out += len(out)
        if 10 <= i < 25:
            assert not ext.shared
    assert spans_out == spans_in  # nothing lost while Redis was away
    assert ext.shared  # back
    fallbacks = total(telemetry, "errorgate_shared_state_fallbacks_total", component="classify")
    assert fallbacks == 15
    messages = [r.getMessage() for r in caplog.records if r.name == "errorgate.shared_state"]
    assert len(messages) == 2 and "unavailable" in messages[0] and "is back" in messages[1]
    # Shared again: the state written after the restart is in Redis.
    assert server.client().keys("errorgate:ep:*")


def test_a_batch_never_waits_longer_than_the_timeout(tmp_path: Path, server: RedisServer) -> None:
    import time

    ext = state_extension(server, timeout="50ms", retry_interval="10s")
    proc, _ = classify(tmp_path, ext)
    server.client().execute_command("CLIENT", "PAUSE", "2000")  # Redis stops answering
    started = time.monotonic()
    run(proc, trace_batch(scenario_batches()[10], complete_traces=True))
    first = time.monotonic() - started
    started = time.monotonic()
    run(proc, trace_batch(scenario_batches()[11], complete_traces=True))
    second = time.monotonic() - started
    assert not ext.shared and first < 0.5 and second < 0.2  # then not tried again for 10 s


# ------------------------------------------------------------------ round trips per batch


def test_one_round_trip_per_batch(tmp_path: Path, server: RedisServer) -> None:
    ext = state_extension(server)
    proc, _ = classify(tmp_path, ext)
    batches = scenario_batches()
    for spans in batches:
        run(proc, trace_batch(spans, complete_traces=True))
    stats = server.commands()
    # Every batch: one pipelined round trip of EVALSHA calls (burn windows, the incident window,
    # plus episodes when a batch has failing items); the scripts' own commands run inside Redis.
    assert ext.round_trips == len(batches)
    assert stats["evalsha"] == ext.calls <= 3 * len(batches)
    assert stats.get("script|load", stats.get("script", 0)) <= 3


def flood_replay(tmp_path: Path, n_replicas: int, ext: RedisStateExtension | None) -> float:
    """One fingerprint failing 60 times in a minute, split by trace id over three parts sent
    to ``n_replicas`` ``sample`` instances; the kept traces' summed adjusted counts... and kept."""
    factory = PROCESSORS.get("sample")
    assert factory is not None
    replicas = []
    for i in range(n_replicas):
        context = ComponentContext(
            "sample",
            tmp_path / str(i),
            Telemetry(),
            logging.getLogger("test"),
            Extensions({"redis": ext} if ext is not None else {}),
        )
        config = factory.config_model.model_validate({"healthy_keep_probability": 0})
        replicas.append(factory.create(config, context))
    kept = 0
    for step in range(6):
        spans = [_span_error("payments", "POST /charge", T0 + step * 10 + i * 0.1, "boom") for i in range(10)]
        for s in spans:
            s.attrs["errorgate.error.fingerprint"] = "fp-payments"
        for part in range(3):
            batch = trace_batch([s for s in spans if part_of(s.trace) == part], complete_traces=True)
            kept += len(run(replicas[part % n_replicas], batch))
    return kept


def test_sample_flood_budget_is_one_for_all_replicas(tmp_path: Path, server: RedisServer) -> None:
    one = flood_replay(tmp_path / "one", 1, None)
    local = flood_replay(tmp_path / "local", 3, None)
    ext = state_extension(server)
    shared = flood_replay(tmp_path / "shared", 3, ext)
    assert local > one  # each replica spends a whole budget of its own
    assert shared == one
    assert ext.round_trips <= 18  # at most one per batch


# ------------------------------------------------------------------ process and config


def _child_uses(ext: RedisStateExtension, parent_client: int, queue: Any) -> None:
    client = ext._connection()
    queue.put((id(client) != parent_client, client.ping()))


def test_connection_is_made_again_after_fork(server: RedisServer) -> None:
    ext = state_extension(server)
    parent = ext._connection()
    assert parent.ping()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_uses, args=(ext, id(parent), queue))
    child.start()
    fresh, pong = queue.get(timeout=10)
    child.join(10)
    assert fresh and pong
    assert ext._connection() is parent  # the parent keeps its own


def test_endpoint_is_validated() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        RedisConfig.model_validate({"endpoint": "http://x:1"})


def test_flap_window_beyond_the_scripts_is_a_config_error_naming_the_key(server: RedisServer) -> None:
    with pytest.raises(ConfigError, match=r"processors\.classify\.episodes\.flap_window"):
        RedisErrorState(
            state_extension(server),
            LocalErrorState(EpisodeTracker(EpisodeParams(flap_window=60)), BurnRates()),
            "classify",
        )
