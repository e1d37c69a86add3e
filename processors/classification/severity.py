"""Severity P1-P4 from multiwindow SLO burn rates (Google SRE workbook, ch. 5) and the service tier,
plus the ITIL impact x urgency matrix.

Burn rate over a window = error ratio / error budget (1 - SLO). A rule fires when both its long
and its short window burn at least ``burn_rate`` and the service's tier is ≤ ``max_tier``; the
first firing rule (most severe first) gives the severity, else P4. Windows whose request count
is below ``min_requests`` do not burn (one failed request out of one is not a 100 % outage).
Counts live in 12 slots per window (resolution window/12), so memory per service is constant.

ITIL: impact from the tier (1 → high, 2 → medium, 3-4 → low; one step higher while the service
is part of a multi-service incident), urgency from the fastest burn condition met ignoring tiers
(page-level burn → high, ticket-level → medium, none → low), priority from the standard matrix.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

SLOTS = 12
IMPACT = ("1-high", "2-medium", "3-low")
URGENCY = ("1-high", "2-medium", "3-low")
PRIORITY = ("1-critical", "2-high", "3-moderate", "4-low", "5-planning")


@dataclass(frozen=True)
class BurnRule:
    severity: str
    burn_rate: float
    long_window: float
    short_window: float
    max_tier: int = 4
    urgency: str = "1-high"


DEFAULT_RULES = (
    BurnRule("P1", 14.4, 3600, 300, max_tier=1),
    BurnRule("P2", 14.4, 3600, 300, max_tier=4),
    BurnRule("P2", 6.0, 6 * 3600, 1800, max_tier=2),
    BurnRule("P3", 6.0, 6 * 3600, 1800, max_tier=4),
    BurnRule("P3", 1.0, 3 * 86400, 6 * 3600, max_tier=4, urgency="2-medium"),
)


class _Window:
    __slots__ = ("slot_len", "slots")

    def __init__(self, seconds: float) -> None:
        self.slot_len = seconds / SLOTS
        self.slots: deque[list[int]] = deque()  # [slot id, requests, errors], oldest first

    def add(self, timestamp: float, requests: int, errors: int) -> None:
        slot_id = int(timestamp // self.slot_len)
        for slot in reversed(self.slots):
            if slot[0] == slot_id:
                slot[1] += requests
                slot[2] += errors
                return
            if slot[0] < slot_id:
                break
        self.slots.append([slot_id, requests, errors])
        if len(self.slots) > 1 and self.slots[-2][0] > slot_id:
            self.slots = deque(sorted(self.slots))
        while len(self.slots) > SLOTS + 1:
            self.slots.popleft()

    def totals(self, now: float) -> tuple[int, int]:
        horizon = int(now // self.slot_len) - SLOTS
        req = err = 0
        for slot_id, r, e in self.slots:
            if slot_id > horizon:
                req += r
                err += e
        return req, err


@dataclass
class _Service:
    now: float
    windows: dict[float, _Window]


@dataclass(frozen=True)
class Assessment:
    severity: str
    impact: str
    urgency: str
    priority: str
    burn_short: float  # burn of the short window of the most severe rule that fired (0 if none)


class BurnRates:
    def __init__(
        self, rules: tuple[BurnRule, ...] = DEFAULT_RULES, min_requests: int = 10, max_services: int = 1000
    ) -> None:
        self.rules = rules
        self.min_requests = min_requests
        self.max_services = max_services
        self._durations = sorted({w for r in rules for w in (r.long_window, r.short_window)})
        self._services: OrderedDict[str, _Service] = OrderedDict()

    def durations(self) -> list[float]:
        """The distinct window lengths the rules use, shortest first."""
        return list(self._durations)

    def record(self, service: str, timestamp: float, requests: int, errors: int) -> None:
        state = self._services.get(service)
        if state is None:
            state = _Service(timestamp, {d: _Window(d) for d in self._durations})
            self._services[service] = state
            while len(self._services) > self.max_services:
                self._services.popitem(last=False)
        else:
            self._services.move_to_end(service)
        state.now = max(state.now, timestamp)
        for window in state.windows.values():
            # Most records land in the newest slot: count there without the general ``add``.
            slots = window.slots
            if slots and slots[-1][0] == int(timestamp // window.slot_len):
                newest = slots[-1]
                newest[1] += requests
                newest[2] += errors
            else:
                window.add(timestamp, requests, errors)

    def totals(self, service: str, window: float) -> tuple[int, int] | None:
        """(requests, errors) in ``service``'s ``window`` ending at its newest telemetry time;
        None when never seen (a shared state answers from its own windows instead)."""
        state = self._services.get(service)
        if state is None or window not in state.windows:
            return None
        return state.windows[window].totals(state.now)

    def burn(self, service: str, window: float, slo: float) -> float:
        found = self.totals(service, window)
        if found is None:
            return 0.0
        requests, errors = found
        if requests < self.min_requests:
            return 0.0
        # Rounded so a burn exactly at a workbook factor (e.g. 14.4) is not lost to float error.
        return round(min(1.0, errors / requests) / (1.0 - slo), 9)

    def assess(self, service: str, tier: int, slo: float, in_incident: bool = False) -> Assessment:
        severity, burn_short = "P4", 0.0
        urgency_index = 2
        burns: dict[float, float] = {}  # rules share windows: each window's burn once

        def burn(window: float) -> float:
            found = burns.get(window)
            if found is None:
                found = burns[window] = self.burn(service, window, slo)
            return found

        for rule in self.rules:
            short = burn(rule.short_window)
            if short < rule.burn_rate or burn(rule.long_window) < rule.burn_rate:
                continue
            urgency_index = min(urgency_index, URGENCY.index(rule.urgency))
            if tier <= rule.max_tier and severity == "P4":
                severity, burn_short = rule.severity, short
        impact_index = {1: 0, 2: 1}.get(tier, 2)
        if in_incident:
            impact_index = max(0, impact_index - 1)
        priority = PRIORITY[impact_index + urgency_index]
        return Assessment(severity, IMPACT[impact_index], URGENCY[urgency_index], priority, burn_short)
