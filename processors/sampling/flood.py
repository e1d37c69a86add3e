"""Error-flood control per fingerprint: the first N traces of each minute are kept whole, the rest
pass a token bucket. A fingerprint never disappears entirely (N >= 1 every minute).

Adjusted counts stay balanced by carrying: each trace the bucket drops is added to the adjusted
count of the next trace of that fingerprint that is kept, so summed adjusted counts equal the true
number of error traces except for the drops after the last kept trace (at most one rate slot's
worth per fingerprint). Budgets are per telemetry-time bucket (the minute for the first N, a slot
of 1/rate seconds after that), so the verdicts do not depend on the order traces arrive in, and a
replay thins the same way as live traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(slots=True)
class _State:
    # Budgets are per telemetry-time bucket, not a token bucket refilled by "time since the newest
    # trace": that made the outcome depend on arrival order (a flood arriving newest-first earned
    # no tokens at all and lost its counts).
    seen_per_minute: dict[int, int] = field(default_factory=dict)
    kept_per_slot: dict[int, int] = field(default_factory=dict)
    carried: int = 0


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    keep: bool
    adjusted: float  # how many error traces this kept one stands for
    reason: str  # "error" (within the first N) or "flood" (rate-limited)


_MAX_BUCKETS = 512  # per fingerprint; older buckets are forgotten (a replay far back starts afresh)


class FloodLimiter:
    def __init__(
        self, first_n_per_minute: int, rate_per_second: float, max_fingerprints: int = 10_000
    ) -> None:
        self.first_n = first_n_per_minute
        self.rate = rate_per_second
        # A slot is 1/rate seconds wide when the rate is below 1/s (one keep per slot), else 1 s
        # wide with round(rate) keeps.
        self.slot_seconds = max(1.0, 1.0 / rate_per_second) if rate_per_second > 0 else float("inf")
        self.per_slot = max(1, round(rate_per_second * self.slot_seconds)) if rate_per_second > 0 else 0
        self.max_fingerprints = max_fingerprints
        self._states: OrderedDict[str, _State] = OrderedDict()

    def admit(self, fingerprint: str, at: float) -> FloodVerdict:
        st = self._states.get(fingerprint)
        if st is None:
            st = self._states[fingerprint] = _State()
            while len(self._states) > self.max_fingerprints:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(fingerprint)
        minute = int(at // 60)
        seen = st.seen_per_minute[minute] = st.seen_per_minute.get(minute, 0) + 1
        _trim(st.seen_per_minute)
        if seen <= self.first_n:
            return self._keep(st, "error")
        if self.per_slot:
            slot = int(at // self.slot_seconds)
            kept = st.kept_per_slot.get(slot, 0)
            if kept < self.per_slot:
                st.kept_per_slot[slot] = kept + 1
                _trim(st.kept_per_slot)
                return self._keep(st, "flood")
        st.carried += 1
        return FloodVerdict(False, 0.0, "flood")

    @staticmethod
    def _keep(st: _State, reason: str) -> FloodVerdict:
        adjusted = 1.0 + st.carried
        st.carried = 0
        return FloodVerdict(True, adjusted, reason)

    def __len__(self) -> int:
        return len(self._states)


def _trim(buckets: dict[int, int]) -> None:
    if len(buckets) > _MAX_BUCKETS:
        for key in sorted(buckets)[: len(buckets) - _MAX_BUCKETS]:
            del buckets[key]
