"""The verdict's latency check is a test, not a threshold: a one-sided Mann-Whitney U over the
per-10s-slot p95s of candidate and baseline (Kayenta's choice for metric series), failing only
when significant at ``alpha`` *and* the median slot p95 is worse by ``max_latency_increase``
and ``latency_min_difference``; fewer than ``latency_min_slots`` slots with enough samples in
either version is inconclusive. Driven through the per-version store as classify fills it."""

from __future__ import annotations

import random

import pytest
from scipy import stats as scipy_stats

from errorgate.processors.deploys import stats
from errorgate.processors.deploys.settings import DeploysConfig
from errorgate.processors.deploys.store import VersionStore
from errorgate.processors.deploys.verdict import judge

T0 = 1_700_000_000.0
SLOTS = 60  # the default 10-minute window of 10 s slots
PER_SLOT = 20  # requests per slot per version: 1200 in the window, above min_requests


def _fill(
    store: VersionStore,
    version: str,
    rng: random.Random,
    median: float,
    slots: int = SLOTS,
    sigma: float = 0.6,
    per_slot: int = PER_SLOT,
) -> None:
    """Lognormal request latencies (a long right tail, as real servers have), per slot a
    slot-level factor on top (a noisy neighbour, a GC pause) so slots differ as in life."""
    for s in range(slots):
        slot_factor = rng.lognormvariate(0, 0.3)
        durations = [median * slot_factor * rng.lognormvariate(0, sigma) for _ in range(per_slot)]
        store.record_requests("pricing", version, T0 + s * 10 + 1, per_slot, 0, durations)


def _verdict(store: VersionStore, config: DeploysConfig) -> dict:
    return judge(store, config.verdict, "pricing", "2.0", "1.0", config.verdict.window).as_json()


def test_four_times_slower_fails_with_the_test_in_the_evidence() -> None:
    config = DeploysConfig()
    store = VersionStore(config)
    rng = random.Random(7)
    _fill(store, "1.0", rng, 0.05)
    _fill(store, "2.0", rng, 0.20)
    body = _verdict(store, config)
    assert body["verdict"] == "fail"
    latency = body["evidence"]["latency"]
    assert latency["verdict"] == "fail"
    assert latency["test"] == "mann_whitney_u_one_sided" and latency["statistic"] == "slot_p95"
    assert latency["p_value"] < 1e-6 and latency["alpha"] == 0.01
    assert latency["slots"] == {"candidate": SLOTS, "baseline": SLOTS, "min": 5}
    ratio = latency["candidate"]["median_slot_p95_ms"] / latency["baseline"]["median_slot_p95_ms"]
    assert 3 < ratio < 5
    assert any("Mann-Whitney" in r for r in body["evidence"]["reasons"])


def test_equal_versions_pass() -> None:
    config = DeploysConfig()
    store = VersionStore(config)
    rng = random.Random(11)
    _fill(store, "1.0", rng, 0.05)
    _fill(store, "2.0", rng, 0.05)
    body = _verdict(store, config)
    assert body["verdict"] == "pass", body["evidence"]["reasons"]
    assert body["evidence"]["latency"]["p_value"] > 0.01


def test_noisy_but_equal_versions_pass_across_20_seeds() -> None:
    """A heavy tail (sigma 1.0: p95 ≈ 5× the median) and noisy slots: the per-slot p95s
    scatter widely, yet equal versions must not fail. Measured false-fail rate: 0 of 20."""
    config = DeploysConfig()
    fails = []
    for seed in range(20):
        store = VersionStore(config)
        rng = random.Random(seed)
        _fill(store, "1.0", rng, 0.05, sigma=1.0)
        _fill(store, "2.0", rng, 0.05, sigma=1.0)
        body = _verdict(store, config)
        if body["verdict"] != "pass":
            fails.append((seed, body["evidence"]["reasons"]))
    print(f"false fail rate: {len(fails)}/20")
    assert fails == []


def test_too_few_slots_is_inconclusive_even_with_enough_requests() -> None:
    """600 requests each, but all in three slots: too few slot p95s to test."""
    config = DeploysConfig()
    store = VersionStore(config)
    rng = random.Random(3)
    _fill(store, "1.0", rng, 0.05, slots=3, per_slot=200)
    _fill(store, "2.0", rng, 0.20, slots=3, per_slot=200)
    body = _verdict(store, config)
    assert body["verdict"] == "inconclusive"
    latency = body["evidence"]["latency"]
    assert latency["verdict"] == "inconclusive" and latency["slots"]["candidate"] == 3
    assert "fewer than 5 slots" in latency["reason"]


def test_versions_without_latency_samples_are_not_judged_on_latency() -> None:
    """Requests counted from logs carry no server-span duration: latency cannot speak, and
    does not hold the verdict at inconclusive."""
    config = DeploysConfig()
    store = VersionStore(config)
    for v in ("1.0", "2.0"):
        for s in range(SLOTS):
            store.record_requests("pricing", v, T0 + s * 10 + 1, PER_SLOT, 0)
    body = _verdict(store, config)
    assert body["verdict"] == "pass"
    assert body["evidence"]["latency"]["verdict"] == "pass"
    assert body["evidence"]["latency"]["slots"]["candidate"] == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 1.5, 2.5]),
        ([3.0, 3.0, 4.0, 5.0, 5.0, 6.0], [1.0, 3.0, 3.0, 2.0, 5.0]),  # ties: exact over mid-ranks
        ([float(i % 7) for i in range(30)], [float(i % 5) for i in range(25)]),  # normal approximation
    ],
)
def test_mann_whitney_matches_scipy(a: list[float], b: list[float]) -> None:
    u, p = stats.mann_whitney_greater(a, b)
    n = len(a) + len(b)
    method = "exact" if n <= stats.EXACT_MAX and len(set(a + b)) == n else "asymptotic"
    ref = scipy_stats.mannwhitneyu(a, b, alternative="greater", method=method)
    assert u == pytest.approx(ref.statistic)
    if method == "exact" or n > stats.EXACT_MAX:
        assert p == pytest.approx(ref.pvalue, rel=1e-6)
    else:  # with ties scipy has no exact method; ours is the exact permutation p over mid-ranks
        assert p == pytest.approx(ref.pvalue, abs=0.05)
