"""Every cache is bounded in bytes, not only in entries: filled with large unique values, the
memory it holds (traced by tracemalloc) stays within its byte budget.

Caches keyed by values of the telemetry (redact's results, clean values and item signatures,
classify's resources, service sets and correlated spans) had only an entry count, so large values
made them hundreds of MiB; those tests fail on a count-only cache. Caches whose entries all have
one size (sample's decisions and error-logged traces, duplicate detection, released trace ids)
were bounded in bytes by their count already; their tests pin the bytes per entry that the
documented byte bound (count x bytes per entry) rests on."""

from __future__ import annotations

import gc
import logging
import os
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from errorgate.caches import MIB, ByteFifoMap, ByteFifoSet, ByteLRU
from errorgate.component import PROCESSORS, ComponentContext
from errorgate.config import AssemblyConfig
from errorgate.intake.dedup import DedupCache
from errorgate.pipeline.assembly.assembler import TraceAssembler
from errorgate.processors.redact import RedactConfig
from errorgate.processors.redaction import memo
from errorgate.processors.redaction.engine import ResultCache
from errorgate.processors.redaction.pool import Detector
from errorgate.processors.redaction.specs import Finding
from errorgate.telemetry import Telemetry


@contextmanager
def traced() -> Iterator[list[int]]:
    """Bytes allocated in the block and still alive at its end (``[bytes]``)."""
    gc.collect()
    tracemalloc.start()
    out = [0]
    try:
        base = tracemalloc.get_traced_memory()[0]
        yield out
        gc.collect()
        out[0] = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def text(n: int, chars: int) -> str:
    """A unique string of ``chars`` characters."""
    head = f"{n:08d}-"
    return head + os.urandom(chars).hex()[: chars - len(head)]


def context(tmp_path: Path, component_id: str) -> ComponentContext:
    return ComponentContext(
        component_id=component_id, data_dir=tmp_path, telemetry=Telemetry(), logger=logging.getLogger("t")
    )


def build(name: str, tmp_path: Path, **settings: object) -> Any:
    factory = PROCESSORS.get(name)
    assert factory is not None
    return factory.create(factory.config_model.model_validate(settings), context(tmp_path, name))


# ----------------------------------------------------------------- the containers


def test_lru_evicts_oldest_first_past_either_bound_and_keeps_exact_accounting() -> None:
    lru: ByteLRU[str, str] = ByteLRU(3, 100, lambda k, v: len(k) + len(v))
    for key in "abc":
        lru.put(key, "x" * 9)
    assert lru.bytes == 30 and len(lru) == 3
    lru.get("a")  # refreshed: "b" is now the oldest
    lru.put("d", "x" * 9)  # past the count
    assert "b" not in lru and "a" in lru and len(lru) == 3
    lru.put("e", "x" * 70)  # past the bytes: the oldest go until it fits
    assert lru.bytes <= 100 and "e" in lru and "c" not in lru
    lru.put("e", "y")  # replaced: charged once
    assert lru.bytes == sum(len(k) + len(v) for k, v in lru._data.items())
    lru.put("huge", "x" * 200)  # larger than the whole budget: not kept, nothing evicted for it
    assert "huge" not in lru and "e" in lru
    assert lru.peek("a") is not None and lru.pop("a") is not None and "a" not in lru


def test_fifo_map_and_set_evict_in_insertion_order() -> None:
    fifo: ByteFifoMap[str, int] = ByteFifoMap(2, 1000, lambda k, v: 10)
    for n, key in enumerate("abc"):
        fifo.put(key, n)
    assert fifo.get("a") is None and fifo.get("b") == 1 and fifo.contains("c") and fifo.bytes == 20
    fifo.put("b", 99)  # a key is never replaced (readers hold no lock)
    assert fifo.get("b") == 1
    seen: ByteFifoSet[bytes] = ByteFifoSet(100, 50, 0)
    for n in range(10):
        seen.add(bytes([n]) * 10)
    assert len(seen) == 5 and seen.bytes == 50 and bytes([9]) * 10 in seen and bytes([4]) * 10 not in seen


# ----------------------------------------------------------------- redact


def test_result_cache_stays_within_its_byte_budget_on_large_unique_values() -> None:
    """100,000 entries of values up to 4,096 characters could be 800 MiB; by default the
    results get half of ``redact.cache_max_mib`` (64)."""
    with traced() as used:
        cache = ResultCache(100_000)
        finding = (Finding("EMAIL_ADDRESS", 0, 10, 1.0, "EmailRecognizer"),)
        for n in range(10_000):
            cache.put((text(n, 4_000), True), finding)
    assert used[0] <= 32 * MIB, used[0] / MIB
    assert 0 < len(cache) < 10_000 and cache.bytes <= cache.max_bytes == 32 * MIB


def test_redact_value_caches_stay_within_cache_max_mib(tmp_path: Path) -> None:
    """The result cache and the clean-value set together, through the detector's own path."""
    config = RedactConfig(workers=0, cache_max_mib=4)
    with traced() as used:
        detector = Detector(
            config.engine_settings(config.effective_policy()),
            workers=0,
            cache_size=config.cache_size,
            cache_max_bytes=int(config.cache_max_mib * MIB),
            timeout=1.0,
        )
        detector.analyze_local = lambda misses: [() for _ in misses]  # type: ignore[method-assign]
        for n in range(0, 4_000, 100):
            last = [(text(i, 4_000), True) for i in range(n, n + 100)]
            detector.detect(last)
    assert used[0] <= 4 * MIB, used[0] / MIB
    check = detector.clean_check()
    assert check is not None and all(map(check, last)) and len(detector.cache) < 4_000


def test_item_memo_stays_within_its_byte_budget_on_large_items() -> None:
    """16,384 signatures of 10 KiB items were 160 MiB."""
    with traced() as used:
        items = memo.CleanItems(16_384)
        for n in range(16_384):
            items.add(n.to_bytes(8, "big") + bytes(10_240))
    assert used[0] <= 8 * MIB, used[0] / MIB
    assert items.hit((16_383).to_bytes(8, "big") + bytes(10_240))


def test_redacted_item_memo_stays_within_its_byte_budget() -> None:
    """Large items and small ones with many findings: bytes, not the entry count, bind."""
    rules = [f"rule{i}" for i in range(40)]  # shared, as the recognizers' names are
    with traced() as used:
        items = memo.RedactedItems(16_384)
        for n in range(16_384):
            big = n % 2 == 0
            content = n.to_bytes(8, "big") + bytes(10_240 if big else 16)
            found = () if big else tuple(("EMAIL_ADDRESS", rule) for rule in rules)
            items.put(
                n.to_bytes(8, "big") + bytes(10_240 if big else 16), memo.Redacted(content, found, False)
            )
    assert used[0] <= 8 * MIB, used[0] / MIB
    assert items.bytes <= 8 * MIB


def test_redact_attribute_key_memo_stays_within_its_character_budget() -> None:
    """100,000 memoised attribute keys of up to 64 KiB could be gigabytes (hostile keys)."""
    from errorgate.processors.redaction.walker import Walker

    walker = Walker(lambda key: "scan", frozenset())
    with traced() as used:
        for n in range(2_000):
            walker._key(text(n, 16_000))
    assert used[0] <= 9 * MIB, used[0] / MIB
    assert walker._key("http.route") == ("scan", False, False)  # still decided, if not memoised


# ----------------------------------------------------------------- classify


def _resource(n: int, chars: int) -> Resource:
    return Resource(
        attributes=[
            KeyValue(key="service.name", value=AnyValue(string_value=f"svc-{n % 7}")),
            KeyValue(key="host.description", value=AnyValue(string_value=text(n, chars))),
        ]
    )


def test_classify_resource_cache_stays_within_its_byte_budget(tmp_path: Path) -> None:
    """4,096 resources of 20 KiB were 80 MiB."""
    proc = build("classify", tmp_path)
    with traced() as used:
        for n in range(4_096):
            proc._resource(_resource(n, 20_000))
    assert used[0] <= 4 * MIB, used[0] / MIB
    assert proc._resource(_resource(5, 10)) == ("svc-5", "")


def test_classify_service_sets_stay_within_their_byte_budget(tmp_path: Path) -> None:
    proc = build("classify", tmp_path)
    with traced() as used:
        for n in range(4_096):
            proc._services(text(n, 4_000), text(n + 1, 4_000))
    assert used[0] <= 2 * MIB, used[0] / MIB


def test_classify_correlated_spans_stay_within_their_byte_budget(tmp_path: Path) -> None:
    """Failing spans remembered for log correlation, with long origin service names."""
    proc = build("classify", tmp_path)
    with traced() as used:
        for n in range(3_000):
            proc._remember((n.to_bytes(16, "big"), n.to_bytes(8, "big")), ("origin", text(n, 16_000), ""))
    assert used[0] <= 32 * MIB, used[0] / MIB
    assert proc._correlated.peek(((2_999).to_bytes(16, "big"), (2_999).to_bytes(8, "big"))) is not None


# ----------------------------------------------------------------- fixed-size entries

# Bytes per entry, at the default counts and after churn, that the documented byte bounds
# (entry count x this) rest on: 100,000 decisions <= 29 MiB, 100,000 error-logged traces and
# 100,000 released ids <= 23 MiB each, 200,000 duplicate-detection keys <= 36 MiB.
SAMPLE_DECISION_BYTES = 300  # measured 292 with a decision object of its own per trace
SAMPLE_ERROR_LOGGED_BYTES = 240  # measured 228
DEDUP_BYTES = 190  # measured 178
RELEASED_BYTES = 240  # measured 228


def _fill(n: int, put: Callable[[bytes], None]) -> None:
    for _ in range(n):
        put(os.urandom(16))


@pytest.mark.usefixtures("decide_from_facts")
def test_sample_caches_cost_what_their_byte_bound_says(tmp_path: Path) -> None:
    from errorgate.processors.sample import Decision

    proc = build("sample", tmp_path, decision_cache_size=20_000)
    with traced() as used:
        # Unique decision objects (a flood's adjusted count), the costliest kind of entry.
        _fill(
            25_000, lambda tid: proc._trace_decision(tid, _NoFacts(Decision(True, "error", 2.0)), True, 0.0)
        )
    assert len(proc._decisions) == 20_000
    assert used[0] <= 20_000 * SAMPLE_DECISION_BYTES, used[0] / 20_000
    with traced() as used:
        _fill(25_000, lambda tid: proc._log_decision(17, tid, "svc"))
    assert len(proc._error_logged) == 20_000
    assert used[0] <= 20_000 * SAMPLE_ERROR_LOGGED_BYTES, used[0] / 20_000


class _NoFacts:
    """``_trace_decision``'s facts for a trace decided as ``decision`` (``_decide`` replaced)."""

    def __init__(self, decision: object) -> None:
        self.decision = decision
        self.errors: dict[bytes, object] = {}


@pytest.fixture
def decide_from_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    from errorgate.processors.sample import Decision, SampleProcessor

    def decide(self: SampleProcessor, tid: bytes, facts: Any, received_at: float) -> Decision:
        d = facts.decision
        return Decision(d.keep, d.reason, d.adjusted)  # a new object per trace

    monkeypatch.setattr(SampleProcessor, "_decide", decide)


def test_dedup_cache_costs_what_its_byte_bound_says() -> None:
    cache = DedupCache(300.0)
    with traced() as used:
        _fill(300_000, lambda key: cache.remember(key, 0.0))
    assert len(cache._seen) == cache.max_entries == 200_000
    assert used[0] <= 200_000 * DEDUP_BYTES, used[0] / 200_000


def test_released_trace_ids_cost_what_their_byte_bound_says(tmp_path: Path) -> None:
    assembler = TraceAssembler(AssemblyConfig(), context(tmp_path, "assembly"))
    with traced() as used:
        for _ in range(15):  # in polls of 10,000, as released
            ids: list[bytes] = []
            _fill(10_000, ids.append)
            assembler._remember_released([(tid, []) for tid in ids])
            del ids
    assert len(assembler._released) == assembler.config.late_cache_size == 100_000
    assert used[0] <= 100_000 * RELEASED_BYTES, used[0] / 100_000
