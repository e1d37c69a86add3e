"""Cross-trace incidents: several services failing together because of one origin.

Within a sliding window (default 2 min of telemetry time, kept as 10 s slots) the tracker
counts, per trace, which services it touched and whether it failed. When ≥ ``min_services``
services each have ≥ ``min_errors`` failing traces whose within-trace origin is the same
service, an incident opens. Candidate origins are ranked by the Ochiai score of spectrum-based
fault localisation (as in MicroRank / TraceRCA): ``ef / sqrt(F * (ef + nf))`` with ``ef``/``nf``
the failing/passing traces touching the candidate and ``F`` all failing traces in the window;
the best-ranked qualifying origin names the incident and other qualifying origins whose failing
services overlap join it. The incident closes when its origin has no failing traces in the window.

Replicas splitting traffic by trace id each see 1/N of those traces, so ``min_errors`` would be
reached N times later and every replica would open the incident on its own. With the ``redis``
extension the tracker also records each batch's counts (``deltas``), ``errorstate`` adds them to
the window kept in Redis and ``evaluate`` judges the summed window it gets back
(``SharedWindow``); which replica opens an incident is settled there too (the first to claim its
origin), the others join it under the same id.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass
class _Slot:
    slot: int
    failed: int = 0
    cover: Counter[str] = field(default_factory=Counter)
    fail_cover: Counter[str] = field(default_factory=Counter)
    by_origin: dict[str, Counter[str]] = field(default_factory=dict)


@dataclass
class Incident:
    id: str
    origin_service: str
    opened_at: float
    services: set[str]
    ranking: list[tuple[str, float]]  # candidate origins, best first, with Ochiai scores


@dataclass
class SharedWindow:
    """The window summed over all replicas (``errorstate.RedisIncidents``)."""

    now: float
    by_origin: dict[str, Counter[str]]  # origin service -> failing traces per failing service
    failed: int = 0  # the ranking's inputs: filled when some origin qualifies
    cover: Counter[str] = field(default_factory=Counter)
    fail_cover: Counter[str] = field(default_factory=Counter)
    # Qualifying origins -> (telemetry time it was first claimed, whether this call claimed it)
    claims: dict[str, tuple[float, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class IncidentChange:
    opened: list[Incident]
    closed: list[Incident]


class IncidentTracker:
    def __init__(
        self,
        window_seconds: float = 120.0,
        min_services: int = 3,
        min_errors: int = 3,
        slot_seconds: float = 10.0,
        max_components: int = 1000,
    ) -> None:
        self.window = window_seconds
        self.min_services = min_services
        self.min_errors = min_errors
        self.slot_seconds = slot_seconds
        self.max_components = max_components
        self._slots: deque[_Slot] = deque()
        self._last: _Slot | None = None  # the slot the previous trace landed in
        self._last_oldest = 0
        self._now = 0.0
        self.active: dict[str, Incident] = {}  # incident id -> incident
        self._by_origin: dict[str, str] = {}  # origin service -> incident id
        # Whether the failing counts changed since the last ``evaluate`` (a failing trace, an
        # expired slot), and whether that evaluation found no qualifying origin: then the next
        # one would find the same nothing and is skipped.
        self._changed = True
        self._quiet = False
        # The counts observed since ``take_deltas`` ((slot, field) -> n), kept only for a shared
        # window: "f" failing traces, "c"/"x" + service cover / failing cover, "o" + origin + NUL +
        # service failing traces by origin.
        self.deltas: Counter[tuple[int, str]] | None = None

    @property
    def now(self) -> float:
        """The newest telemetry time observed (0 before any)."""
        return self._now

    def take_deltas(self) -> Counter[tuple[int, str]]:
        found, self.deltas = self.deltas or Counter(), Counter()
        return found

    def observe(
        self, timestamp: float, services: frozenset[str], failing: frozenset[str], origins: frozenset[str]
    ) -> None:
        """One trace: every service/callee it touched, services with failing spans, origin services."""
        if timestamp > self._now:
            self._now = timestamp
        slot_id = int(timestamp // self.slot_seconds)
        oldest = int((self._now - self.window) // self.slot_seconds)
        slot = self._last
        # Consecutive traces mostly land in the same slot: skip the lookup while no slot can expire.
        if slot is None or slot.slot != slot_id or oldest != self._last_oldest:
            slot = self._slot(slot_id)
            self._last, self._last_oldest = slot, oldest
        if slot is None:
            return  # older than the window
        if self.deltas is not None:
            self._record(slot_id, services, failing, origins)
        if len(services) <= self.max_components:
            for s in services:
                slot.cover[s] += 1
        else:
            for s in list(services)[: self.max_components]:
                slot.cover[s] += 1
        if failing:
            self._changed = True
            slot.failed += 1
            for s in services:
                slot.fail_cover[s] += 1
            for origin in origins:
                counts = slot.by_origin.setdefault(origin, Counter())
                for s in failing:
                    counts[s] += 1

    def _record(
        self, slot_id: int, services: frozenset[str], failing: frozenset[str], origins: frozenset[str]
    ) -> None:
        deltas = self.deltas
        assert deltas is not None
        touched = services if len(services) <= self.max_components else list(services)[: self.max_components]
        deltas.update((slot_id, "c" + s) for s in touched)
        if failing:
            deltas[slot_id, "f"] += 1
            deltas.update((slot_id, "x" + s) for s in services)
            deltas.update((slot_id, f"o{origin}\x00{s}") for origin in origins for s in failing)

    def _slot(self, slot_id: int) -> _Slot | None:
        oldest = int((self._now - self.window) // self.slot_seconds)
        while self._slots and self._slots[0].slot <= oldest:
            self._slots.popleft()
            self._changed = True
        if slot_id <= oldest:
            return None
        for slot in reversed(self._slots):
            if slot.slot == slot_id:
                return slot
            if slot.slot < slot_id:
                break
        new = _Slot(slot_id)
        self._slots.append(new)
        if len(self._slots) > 1 and self._slots[-2].slot > slot_id:
            self._slots = deque(sorted(self._slots, key=lambda s: s.slot))
        return new

    def ochiai(self) -> list[tuple[str, float]]:
        """Every component touched by a failing trace in the window, ranked by Ochiai score."""
        failed = sum(s.failed for s in self._slots)
        if not failed:
            return []
        cover: Counter[str] = Counter()
        fail_cover: Counter[str] = Counter()
        for s in self._slots:
            cover.update(s.cover)
            fail_cover.update(s.fail_cover)
        return _ochiai(failed, cover, fail_cover)

    def evaluate(self, shared: SharedWindow | None = None) -> IncidentChange:
        """Open and close incidents for the current window (call after a batch's traces): this
        replica's own, or ``shared``, the window summed over all replicas."""
        if shared is not None:
            self._now = max(self._now, shared.now)
            by_origin = shared.by_origin
        else:
            self._slot(int(self._now // self.slot_seconds))  # expire old slots
            if self._quiet and not self._changed:
                return IncidentChange([], [])
            self._changed = False
            by_origin = {}
            for s in self._slots:
                for origin, counts in s.by_origin.items():
                    by_origin.setdefault(origin, Counter()).update(counts)
        spiking = {
            origin: {svc for svc, n in counts.items() if n >= self.min_errors}
            for origin, counts in by_origin.items()
        }
        qualifying = {o: svcs for o, svcs in spiking.items() if len(svcs) >= self.min_services}
        # The ranking only orders and annotates qualifying origins: most batches have none.
        self._quiet = not qualifying
        if not qualifying:
            ranking = []
        elif shared is not None:
            ranking = _ochiai(shared.failed, shared.cover, shared.fail_cover)
        else:
            ranking = self.ochiai()
        opened = self._open(qualifying, ranking, shared)
        closed: list[Incident] = []
        for incident in list(self.active.values()):
            origins = [o for o, i in self._by_origin.items() if i == incident.id]
            if not any(o in by_origin for o in origins):
                closed.append(self.active.pop(incident.id))
                for o in origins:
                    del self._by_origin[o]
        return IncidentChange(opened, closed)

    def _open(
        self, qualifying: dict[str, set[str]], ranking: list[tuple[str, float]], shared: SharedWindow | None
    ) -> list[Incident]:
        """Open or join an incident per qualifying origin, best-ranked first; the ones this
        replica opened (shared: those it was first to claim; the others open under the same id)."""
        rank = {c: i for i, (c, _) in enumerate(ranking)}
        opened: list[Incident] = []
        for origin in sorted(qualifying, key=lambda o: (rank.get(o, len(rank)), o)):
            services = qualifying[origin]
            incident_id = self._by_origin.get(origin)
            if incident_id is None:
                joined = next((i for i in self.active.values() if i.services & services), None)
                if joined is None:
                    at, mine = shared.claims.get(origin, (self._now, False)) if shared else (self._now, True)
                    digest = hashlib.sha256(f"{origin}\x00{int(at)}".encode()).hexdigest()[:12]
                    joined = Incident(f"inc-{digest}", origin, at, set(), [])
                    self.active[joined.id] = joined
                    if mine:
                        opened.append(joined)
                self._by_origin[origin] = incident_id = joined.id
            incident = self.active[incident_id]
            incident.services |= services
            incident.ranking = [
                (c, score) for c, score in ranking if c in qualifying or c == incident.origin_service
            ]
        return opened

    def incident_for(self, origin_service: str) -> Incident | None:
        incident_id = self._by_origin.get(origin_service)
        return self.active.get(incident_id) if incident_id else None


def _ochiai(failed: int, cover: Counter[str], fail_cover: Counter[str]) -> list[tuple[str, float]]:
    if not failed:
        return []
    scores = [(c, ef / math.sqrt(failed * cover[c])) for c, ef in fail_cover.items() if ef and cover[c]]
    return sorted(scores, key=lambda cs: (-cs[1], cs[0]))
