"""The statistics of deploy verdicts: a one-sided Fisher exact test, a one-sided Mann-Whitney U
test and a latency sketch.

Fisher exact rather than a two-proportion z-test: failures are counts, often small ones (a
healthy baseline fails a handful of requests in ten minutes), where the normal approximation
is poor; the exact hypergeometric tail is right at any count. Rather than Mann-Whitney on
per-interval failure ratios (Kayenta's choice for arbitrary metric series), because a ratio
per interval weighs a quiet interval like a busy one and needs many intervals with traffic
before it can reject anything; the request counts already are the sample. Pure Python
(``math.lgamma``): one function does not justify scipy's 40 MB.

Latency is different: a version's latency is a distribution per slot, not a count, so the
latency check compares the per-slot p95s of the two versions with Mann-Whitney U, as Kayenta
does for metric series: rank-based, so a heavy tail or one bad slot does not dominate, and it
assumes no distribution. Exact (over mid-ranks, so ties are handled) up to ``EXACT_MAX``
values, the normal approximation with tie and continuity corrections above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

# Relative accuracy of latency quantiles: bucket bounds grow by this factor (DDSketch's idea).
GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
_MIN_SECONDS = 1e-6
# Above this many values in both samples together, Mann-Whitney's p-value is the normal
# approximation (the exact count grows as N³: 40 values cost about a million steps).
EXACT_MAX = 40


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(failed_a: int, requests_a: int, failed_b: int, requests_b: int) -> float:
    """One-sided p-value that group a fails more often than group b: P(X >= failed_a) for X
    hypergeometric (all requests, all failures, requests of a)."""
    total = requests_a + requests_b
    failures = failed_a + failed_b
    if failures == 0 or requests_a == 0 or requests_b == 0:
        return 1.0
    top = min(failures, requests_a)
    log_all = _log_choose(total, requests_a)
    mode = (requests_a + 1) * (failures + 1) // (total + 2)
    p = 0.0
    for x in range(failed_a, top + 1):
        if requests_a - x > total - failures:
            continue
        term = math.exp(_log_choose(failures, x) + _log_choose(total - failures, requests_a - x) - log_all)
        p += term
        if x > mode and term < p * 1e-12:
            break  # past the mode the terms only shrink: the rest cannot change the answer
    return min(1.0, p)


def bucket_of(seconds: float) -> int:
    """The sketch bucket of a duration."""
    return math.ceil(math.log(max(seconds, _MIN_SECONDS)) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """A duration inside bucket ``index`` within GAMMA's relative accuracy."""
    return 2 * GAMMA**index / (GAMMA + 1)


def quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile of a merged sketch (None when empty)."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen > rank:
            return bucket_value(index)
    return bucket_value(max(buckets))


def merge(sketches: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for sketch in sketches:
        for index, n in sketch.items():
            merged[index] = merged.get(index, 0) + n
    return merged


def _mid_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks (1-based, ties share their mean rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    ties = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _exact_tail(doubled: Sequence[int], n: int, at_least: int) -> float:
    """P(the doubled ranks of a random n-subset sum to ``at_least`` or more): counted over
    every subset by dynamic programming (ways[k][s]: subsets of size k summing to s)."""
    top = sum(sorted(doubled)[-n:]) if n else 0
    ways = [[0] * (top + 1) for _ in range(n + 1)]
    ways[0][0] = 1
    for r in doubled:
        for k in range(n, 0, -1):
            below, row = ways[k - 1], ways[k]
            for s in range(top - r, -1, -1):
                if below[s]:
                    row[s + r] += below[s]
    total = sum(ways[n])
    return sum(ways[n][max(0, at_least) :]) / total


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(U of ``a``, one-sided p-value that values of ``a`` tend to be larger than those of ``b``)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 0.0, 1.0
    ranks, ties = _mid_ranks([*a, *b])
    rank_sum = sum(ranks[:n])
    u = rank_sum - n * (n + 1) / 2
    total = n + m
    if total <= EXACT_MAX:
        return u, _exact_tail([round(2 * r) for r in ranks], n, round(2 * rank_sum))
    tie_term = sum(t**3 - t for t in ties) / (total * (total - 1))
    variance = n * m / 12 * ((total + 1) - tie_term)
    if variance <= 0:
        return u, 1.0  # every value equal: nothing to tell the samples apart
    z = (u - n * m / 2 - 0.5) / math.sqrt(variance)
    return u, 0.5 * math.erfc(z / math.sqrt(2))
