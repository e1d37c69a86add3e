"""Per-(service, version) windowed state: requests, failures, a server-span latency sketch per
time slot, and the error fingerprints each version has shown with when they first appeared.

Deploys come and go, so a version not seen for ``version_ttl`` (telemetry time: the newest
timestamp the store has seen) ages out, and ``max_versions`` bounds memory whatever the
timestamps say (least recently seen out first). Slots older than ``retention`` are dropped as
new ones open. ``on_expire`` hears of every (service, version) dropped, so label values that
stood for it can be released.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from errorgate.processors.deploys import stats
from errorgate.processors.deploys.settings import DeploysConfig

# How often (in telemetry seconds) versions past their ttl are looked for.
_EXPIRY_EVERY = 60.0


@dataclass
class Slot:
    requests: int = 0
    failures: int = 0
    latency: dict[int, int] = field(default_factory=dict)


@dataclass
class Sighting:
    """An error group in one version: when first and last seen, how often, and its kinds."""

    first_seen: float
    last_seen: float
    count: int = 0
    kind: str = ""


@dataclass
class VersionState:
    first_seen: float
    last_seen: float
    slots: OrderedDict[int, Slot] = field(default_factory=OrderedDict)
    fingerprints: OrderedDict[str, Sighting] = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class WindowStats:
    requests: int
    failures: int
    latency: dict[int, int]
    start: float
    end: float
    # Each slot's own latency sketch, oldest first (the latency test compares slot p95s).
    slot_latency: tuple[dict[int, int], ...] = ()

    @property
    def ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


class VersionStore:
    def __init__(self, config: DeploysConfig, on_expire: Callable[[str, str], None] | None = None) -> None:
        self.config = config
        self.on_expire = on_expire
        self._versions: OrderedDict[tuple[str, str], VersionState] = OrderedDict()
        self.now = 0.0  # newest telemetry timestamp seen
        self._next_expiry = 0.0
        # Cascades each service started lately: origin service -> last time seen propagated.
        self.cascade_origins: dict[str, float] = {}

    # ------------------------------------------------------------------ recording

    def _state(self, service: str, version: str, ts: float) -> VersionState:
        key = (service, version)
        state = self._versions.get(key)
        if state is None:
            state = self._versions[key] = VersionState(ts, ts)
            while len(self._versions) > self.config.max_versions:
                self._drop(next(iter(self._versions)))
        else:
            self._versions.move_to_end(key)
            state.last_seen = max(state.last_seen, ts)
        if ts > self.now:
            self.now = ts
            if ts >= self._next_expiry:
                self._next_expiry = ts + _EXPIRY_EVERY
                self.expire()
        return state

    def record_requests(
        self, service: str, version: str, second: float, n: int, failed: int, durations: Iterable[float] = ()
    ) -> None:
        state = self._state(service, version, second)
        slot_id = int(second // self.config.slot)
        slot = state.slots.get(slot_id)
        if slot is None:
            slot = state.slots[slot_id] = Slot()
            self._trim(state, slot_id)
        slot.requests += n
        slot.failures += failed
        latency = slot.latency
        for seconds in durations:
            index = stats.bucket_of(seconds)
            latency[index] = latency.get(index, 0) + 1

    def record_error(
        self, service: str, version: str, fingerprint: str, ts: float, kind: str, cascade_origin: str = ""
    ) -> None:
        if cascade_origin and cascade_origin != service:
            self.cascade_origins[cascade_origin] = max(ts, self.cascade_origins.get(cascade_origin, 0.0))
        state = self._state(service, version, ts)
        seen = state.fingerprints.get(fingerprint)
        if seen is None:
            seen = state.fingerprints[fingerprint] = Sighting(ts, ts)
            while len(state.fingerprints) > self.config.max_fingerprints:
                state.fingerprints.popitem(last=False)
        else:
            state.fingerprints.move_to_end(fingerprint)
        seen.first_seen = min(seen.first_seen, ts)
        seen.last_seen = max(seen.last_seen, ts)
        seen.count += 1
        seen.kind = kind

    def _trim(self, state: VersionState, opened: int) -> None:
        """Keep the slots ordered by id (a late item may open an older slot after newer ones)
        and drop those past ``retention`` before the newest."""
        slots = state.slots
        ids = list(slots)  # ``opened`` was just added: it is last
        if len(ids) > 1 and ids[-2] > opened:
            ordered = sorted(slots.items())
            slots.clear()
            slots.update(ordered)
        horizon = next(reversed(slots)) - int(self.config.retention // self.config.slot)
        while slots and next(iter(slots)) <= horizon:
            slots.popitem(last=False)

    # ------------------------------------------------------------------ ageing out

    def expire(self) -> None:
        """Drop versions not seen for ``version_ttl`` before the newest timestamp."""
        horizon = self.now - self.config.version_ttl
        stale = [key for key, state in self._versions.items() if state.last_seen < horizon]
        for key in stale:
            self._drop(key)
        for origin, last in list(self.cascade_origins.items()):
            if last < horizon:
                del self.cascade_origins[origin]

    def _drop(self, key: tuple[str, str]) -> None:
        del self._versions[key]
        if self.on_expire is not None:
            self.on_expire(*key)

    # ------------------------------------------------------------------ saving and restoring

    def snapshot(self) -> dict[str, Any]:
        """Everything a verdict or health answer reads, as plain JSON data."""
        versions = [
            {
                "service": service,
                "version": version,
                "first_seen": st.first_seen,
                "last_seen": st.last_seen,
                "slots": [[i, s.requests, s.failures, list(s.latency.items())] for i, s in st.slots.items()],
                "fingerprints": [
                    [fp, f.first_seen, f.last_seen, f.count, f.kind] for fp, f in st.fingerprints.items()
                ],
            }
            for (service, version), st in self._versions.items()
        ]
        return {"format": 1, "now": self.now, "versions": versions, "cascade_origins": self.cascade_origins}

    def restore(self, doc: Mapping[str, Any]) -> None:
        """Take back a ``snapshot`` (least recently seen first, as saved); raises ValueError,
        KeyError or TypeError on a document that is not one."""
        if doc.get("format") != 1:
            raise ValueError(f"unknown format {doc.get('format')!r}")
        restored: OrderedDict[tuple[str, str], VersionState] = OrderedDict()
        for v in doc["versions"]:
            state = VersionState(float(v["first_seen"]), float(v["last_seen"]))
            for slot_id, requests, failures, latency in v["slots"]:
                state.slots[int(slot_id)] = Slot(
                    int(requests), int(failures), {int(b): int(n) for b, n in latency}
                )
            for fp, first, last, count, kind in v["fingerprints"]:
                state.fingerprints[str(fp)] = Sighting(float(first), float(last), int(count), str(kind))
            restored[(str(v["service"]), str(v["version"]))] = state
        self._versions = restored
        self.now = max(self.now, float(doc["now"]))
        self.cascade_origins = {str(k): float(t) for k, t in doc["cascade_origins"].items()}
        self.expire()  # a long stop may have outlived some versions' ttl (by the saved clock)

    def in_use(self, version: str) -> bool:
        """Whether any service still has state for this version string."""
        return any(v == version for _, v in self._versions)

    # ------------------------------------------------------------------ reading

    def services(self) -> list[str]:
        return sorted({s for s, _ in self._versions})

    def versions(self, service: str) -> list[str]:
        """The service's versions, oldest first sighting first."""
        found = [(state.first_seen, v) for (s, v), state in self._versions.items() if s == service]
        return [v for _, v in sorted(found)]

    def get(self, service: str, version: str) -> VersionState | None:
        return self._versions.get((service, version))

    def window(self, state: VersionState, seconds: float, end: float | None = None) -> WindowStats:
        """Totals of the slots within ``seconds`` up to ``end`` (default: the version's last sighting)."""
        end = state.last_seen if end is None else end
        last = int(end // self.config.slot)
        first = last - max(1, round(seconds / self.config.slot)) + 1
        requests = failures = 0
        sketches = []
        for slot_id, slot in state.slots.items():
            if first <= slot_id <= last:
                requests += slot.requests
                failures += slot.failures
                sketches.append(slot.latency)
        return WindowStats(
            requests, failures, stats.merge(sketches), first * self.config.slot, end, tuple(sketches)
        )

    def service_window(self, service: str, seconds: float) -> WindowStats:
        """All versions of ``service`` over the ``seconds`` before the newest timestamp."""
        requests = failures = 0
        for (s, _), state in self._versions.items():
            if s == service:
                w = self.window(state, seconds, self.now)
                requests += w.requests
                failures += w.failures
        return WindowStats(requests, failures, {}, self.now - seconds, self.now)

    def kinds_since(self, service: str, since: float) -> set[str]:
        """Error kinds of ``service`` last seen at or after ``since``."""
        kinds: set[str] = set()
        for (s, _), state in self._versions.items():
            if s == service:
                kinds.update(f.kind for f in state.fingerprints.values() if f.last_seen >= since)
        return kinds
