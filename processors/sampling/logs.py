"""``sample``'s decisions for one scope of log records, worked out column-wise.

Record by record, a decision costs a few hundred nanoseconds of bytecode; the common scope —
every record with a trace id, none of them following a cached trace decision or an earlier
ERROR log of its trace — is decided by chains of ``map`` over C callables instead, and only the
exceptions (ERROR records, followers) are then set one by one. Whenever the column-wise result
could differ from the record-by-record one (``SampleProcessor._log_decision`` in order), the
scope is left to that path (``None``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from itertools import compress
from typing import Protocol, TypeVar

SEVERITY_ERROR = 17  # OTLP SeverityNumber ERROR
_NO_TRACE = bytes(16)
_TRACED = {16}


class _Decision(Protocol):
    @property
    def keep(self) -> bool: ...


D = TypeVar("D", bound=_Decision)


def scope_decisions(
    tids: list[bytes],
    sevs: list[int],
    *,
    trace_decisions: Mapping[bytes, D],
    error_logged: OrderedDict[bytes, None],
    cache_size: int,
    threshold: int,
    by_probability: Mapping[bool, D],
    by_severity: D,
    follow_kept: D,
    follow: Callable[[D], D],
) -> list[D] | None:
    """One decision per record (``tids``/``sevs`` its columns), with ``error_logged`` updated as
    the records in order would; None (nothing changed) when the scope must go record by record.

    ``threshold`` must be below the maximum (probability > 0)."""
    n = len(tids)
    if set(map(len, tids)) != _TRACED or _NO_TRACE in tids:
        return None  # records without a trace id use the service's probability (and the rng)
    errors = list(compress(range(n), map(SEVERITY_ERROR.__le__, sevs)))
    # Membership before this scope's ERROR records are added: exact for the other records when
    # none of them shares a trace with an ERROR record here and nothing is evicted meanwhile.
    logged = list(map(error_logged.__contains__, tids))
    if errors:
        error_tids = {tids[i] for i in errors}
        if not error_tids.isdisjoint(compress(tids, map(SEVERITY_ERROR.__gt__, sevs))):
            return None
        if True in logged and len(error_logged) + len(errors) > cache_size:
            return None
    # Randomness (the low 7 bytes, big-endian) >= threshold, compared as bytes of equal length.
    low = threshold.to_bytes(7, "big")
    decisions = [by_probability[t[9:] >= low] for t in tids]
    cached = list(map(trace_decisions.get, tids))
    if cached.count(None) != n or True in logged:
        for i in range(n):
            found = cached[i]
            if found is not None:
                decisions[i] = follow(found)
            elif logged[i]:
                decisions[i] = follow_kept
    for i in errors:  # in order, as the records would be: the oldest entries are evicted first
        error_logged[tids[i]] = None
        while len(error_logged) > cache_size:
            error_logged.popitem(last=False)
        decisions[i] = by_severity
    return decisions
