"""Error kind per (service, fingerprint) from 1-minute buckets on the telemetry's own timestamps.

Rules (defaults; all configurable):
- ``intermittent``: flapping — the weighted share of state changes over the last 21 buckets
  reaches 50 % (it stops flapping below 25 %: Nagios' hysteresis, weights 0.8 oldest … 1.2
  newest) — or the fingerprint reopened ≥ 2 times within 24 h, or its current episode began
  within 30 min of the previous one ending (a short episode that recurs is not transient);
- ``persistent``: the current episode has been active ≥ 5 consecutive buckets, or the error is
  of a deterministic class (validation, config, auth, bug) and fails on every attempt (a retry
  of it failed, or it occurred ≥ 3 times in the episode);
- ``transient``: everything else — a short episode (the caller also forces ``transient`` when
  a retry of the operation succeeded in the same trace).

The kind is the best belief at the moment an item passes: the first items of what later turns
out to be a persistent failure leave as ``transient``; no item is held back to wait for evidence.
Memory is bounded: at most ``max_states`` (service, fingerprint) states, least recently seen
evicted first; each state is a few integers plus a short deque.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EpisodeParams:
    bucket_seconds: float = 60.0
    persistent_min_buckets: int = 5
    quiet_buckets: int = 30  # an episode starting this soon after the previous one recurs
    flap_window: int = 21
    flap_start: float = 0.50
    flap_end: float = 0.25
    reopen_window_buckets: int = 24 * 60
    reopen_count: int = 2
    deterministic_min_occurrences: int = 3
    max_states: int = 10_000


@dataclass
class _State:
    first_bucket: int
    last_bucket: int
    episode_start: int
    prev_episode_end: int | None = None
    mask: int = 1  # bit i set: bucket ``last_bucket - i`` had this error
    occurrences: int = 0
    retry_failed: bool = False
    flapping: bool = False
    starts: deque[int] = field(default_factory=lambda: deque(maxlen=16))


@dataclass(frozen=True)
class Observation:
    kind: str
    new_episode: bool
    new_fingerprint: bool
    flap_share: float


class EpisodeTracker:
    def __init__(self, params: EpisodeParams | None = None) -> None:
        self.params = params or EpisodeParams()
        self._states: OrderedDict[tuple[str, str], _State] = OrderedDict()
        self._shares: dict[int, float] = {}  # mask -> share (masks repeat: steady errors are all ones)
        self._weights = [
            0.8 + 0.4 * (i / max(1, self.params.flap_window - 2)) for i in range(self.params.flap_window - 1)
        ]

    def __len__(self) -> int:
        return len(self._states)

    def bucket(self, timestamp: float) -> int:
        return int(timestamp // self.params.bucket_seconds)

    def observe(
        self,
        service: str,
        fingerprint: str,
        timestamp: float,
        *,
        deterministic: bool,
        retry_failed: bool = False,
    ) -> Observation:
        """Record one failing item seen at ``timestamp`` (telemetry time, seconds) and return its kind."""
        p = self.params
        b = self.bucket(timestamp)
        key = (service, fingerprint)
        state = self._states.get(key)
        new_fingerprint = state is None
        new_episode = False
        if state is None:
            state = _State(first_bucket=b, last_bucket=b, episode_start=b)
            state.starts.append(b)
            self._states[key] = state
            new_episode = True
            while len(self._states) > p.max_states:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
            if b > state.last_bucket:
                gap = b - state.last_bucket
                state.mask = ((state.mask << min(gap, p.flap_window)) | 1) & ((1 << p.flap_window) - 1)
                if gap > 1:  # at least one quiet bucket: the previous episode ended
                    state.prev_episode_end = state.last_bucket
                    state.episode_start = b
                    state.occurrences = 0
                    state.retry_failed = False
                    state.starts.append(b)
                    new_episode = True
                state.last_bucket = b
            elif b < state.last_bucket and state.last_bucket - b < p.flap_window:
                state.mask |= 1 << (state.last_bucket - b)  # late item: fill in history, episode unchanged
        state.occurrences += 1
        state.retry_failed = state.retry_failed or retry_failed
        share = self._flap_share(state.mask)
        state.flapping = share >= p.flap_start or (state.flapping and share >= p.flap_end)
        return Observation(self._kind(state, deterministic), new_episode, new_fingerprint, share)

    def _flap_share(self, mask: int) -> float:
        """Nagios' percent state change over the window, oldest transitions weighted 0.8, newest 1.2."""
        share = self._shares.get(mask)
        if share is None:
            if len(self._shares) >= 65536:
                self._shares.clear()
            share = self._shares[mask] = self._compute_share(mask)
        return share

    def _compute_share(self, mask: int) -> float:
        n = self.params.flap_window
        bits = [(mask >> (n - 1 - i)) & 1 for i in range(n)]  # oldest first
        changed = sum(w for i, w in enumerate(self._weights) if bits[i] != bits[i + 1])
        return changed / sum(self._weights)

    def _kind(self, state: _State, deterministic: bool) -> str:
        p = self.params
        recurred = (
            state.prev_episode_end is not None
            and state.episode_start - state.prev_episode_end <= p.quiet_buckets
        )
        if state.flapping or recurred:
            return "intermittent"
        # Reopens are starts other than the first: fewer starts than the count cannot reach it.
        if len(state.starts) >= p.reopen_count:
            horizon = state.last_bucket - p.reopen_window_buckets
            reopens = sum(1 for s in state.starts if s >= horizon and s != state.first_bucket)
            if reopens >= p.reopen_count:
                return "intermittent"
        if state.last_bucket - state.episode_start + 1 >= p.persistent_min_buckets:
            return "persistent"
        if deterministic and (state.retry_failed or state.occurrences >= p.deterministic_min_occurrences):
            return "persistent"
        return "transient"
