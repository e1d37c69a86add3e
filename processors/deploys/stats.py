"""The statistics of deploy verdicts: a one-sided Fisher exact test and a latency sketch.

Fisher exact rather than a two-proportion z-test: failures are counts, often small ones (a
healthy baseline fails a handful of requests in ten minutes), where the normal approximation
is poor; the exact hypergeometric tail is right at any count. Rather than Mann-Whitney on
per-interval failure ratios (Kayenta's choice for arbitrary metric series), because a ratio
per interval weighs a quiet interval like a busy one and needs many intervals with traffic
before it can reject anything; the request counts already are the sample. Pure Python
(``math.lgamma``): one function does not justify scipy's 40 MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# Relative accuracy of latency quantiles: bucket bounds grow by this factor (DDSketch's idea).
GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
_MIN_SECONDS = 1e-6


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
