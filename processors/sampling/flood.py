"""Error-flood control per fingerprint: the first N traces of each minute are kept whole, the rest
pass a token bucket. A fingerprint never disappears entirely (N >= 1 every minute).

Adjusted counts stay balanced by carrying: each trace the bucket drops is added to the adjusted
count of the next trace of that fingerprint that is kept, so summed adjusted counts equal the true
number of error traces except for the drops after the last kept trace (at most one bucket refill
interval's worth per fingerprint). Time is the telemetry's own (trace end time), so a replay thins
the same way as live traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _State:
    minute: int
    seen_in_minute: int = 0
    tokens: float = 0.0
    last_time: float = 0.0
    carried: int = 0


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    keep: bool
    adjusted: float  # how many error traces this kept one stands for
    reason: str  # "error" (within the first N) or "flood" (rate-limited)


class FloodLimiter:
    def __init__(
        self, first_n_per_minute: int, rate_per_second: float, max_fingerprints: int = 10_000
    ) -> None:
        self.first_n = first_n_per_minute
        self.rate = rate_per_second
        self.burst = max(1.0, rate_per_second)
        self.max_fingerprints = max_fingerprints
        self._states: OrderedDict[str, _State] = OrderedDict()

    def admit(self, fingerprint: str, at: float) -> FloodVerdict:
        minute = int(at // 60)
        st = self._states.get(fingerprint)
        if st is None:
            st = self._states[fingerprint] = _State(minute=minute, last_time=at)
            while len(self._states) > self.max_fingerprints:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(fingerprint)
        if minute > st.minute:
            st.minute, st.seen_in_minute = minute, 0
        st.tokens = min(self.burst, st.tokens + max(0.0, at - st.last_time) * self.rate)
        st.last_time = max(st.last_time, at)
        st.seen_in_minute += 1
        if st.seen_in_minute <= self.first_n:
            return self._keep(st, "error")
        if st.tokens >= 1.0:
            st.tokens -= 1.0
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
