"""Routing health per service: ``pass`` / ``warn`` / ``fail`` for load balancers.

- ``fail``: fast burn (both windows burn at least ``fail_burn_rate``), a persistent error
  group, or the service is where a cascade started (another service's failure propagated from it);
- ``warn``: slow burn (``warn_burn_rate``) or an intermittent error group;
  (error kinds count only while the service burns at least ``kind_min_burn``);
- else ``pass``.

Burn and kinds run on telemetry time. Hysteresis runs on the wall clock of the questions asked:
a worse state is reported at once (shed load early), a better one only after it has held for
``recover_after`` (so a flapping service does not flap the route).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from errorgate.processors.deploys.settings import HealthConfig
from errorgate.processors.deploys.store import VersionStore

RANK = {"pass": 0, "warn": 1, "fail": 2}


class RoutingHealth:
    def __init__(
        self, config: HealthConfig, store: VersionStore, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        # service -> (reported status, when a better raw status was first seen, or None)
        self._reported: dict[str, tuple[str, float | None]] = {}

    def _burn(self, service: str, window: float, slo: float) -> float:
        w = self.store.service_window(service, window)
        if w.requests < self.config.min_requests:
            return 0.0
        return round(w.ratio / (1.0 - slo), 6)

    def raw(self, service: str, slo: float) -> tuple[str, dict[str, Any], list[str]]:
        """(status now, health+json checks, reasons) without hysteresis."""
        c = self.config
        short, long = self._burn(service, c.short_window, slo), self._burn(service, c.long_window, slo)
        since = self.store.now - c.kind_window
        kinds: set[str] = set()
        origin = False
        if short >= c.kind_min_burn:
            kinds = self.store.kinds_since(service, since)
            origin = self.store.cascade_origins.get(service, float("-inf")) >= since
        reasons: list[str] = []
        status = "pass"
        if min(short, long) >= c.fail_burn_rate:
            reasons.append(f"fast burn: {short:g}x ({c.short_window:g}s) and {long:g}x ({c.long_window:g}s)")
        if "persistent" in kinds:
            reasons.append("persistent errors")
        if origin:
            reasons.append("origin of a cascading failure")
        if reasons:
            status = "fail"
        else:
            if min(short, long) >= c.warn_burn_rate:
                reasons.append(f"slow burn: {short:g}x and {long:g}x")
            if "intermittent" in kinds:
                reasons.append("intermittent errors")
            status = "warn" if reasons else "pass"
        checks = {
            "burn_rate:short": [
                {"status": _level(short, c), "observedValue": short, "window": c.short_window}
            ],
            "burn_rate:long": [{"status": _level(long, c), "observedValue": long, "window": c.long_window}],
            "errors:kinds": [{"status": _kinds_level(kinds, origin), "observedValue": sorted(kinds)}],
        }
        return status, checks, reasons

    def assess(self, service: str, slo: float) -> dict[str, Any]:
        """The health+json document, with hysteresis applied."""
        status, checks, reasons = self.raw(service, slo)
        now = self.clock()
        reported, better_since = self._reported.get(service, ("pass", None))
        if RANK[status] >= RANK[reported]:
            reported, better_since = status, None
        elif better_since is None:
            better_since = now
        if better_since is not None and now - better_since >= self.config.recover_after:
            reported, better_since = status, None
        self._reported[service] = (reported, better_since)
        body: dict[str, Any] = {
            "status": reported,
            "serviceId": service,
            "output": "; ".join(reasons),
            "checks": checks,
        }
        if reported != status:
            body["notes"] = [
                f"now {status}; {reported} held until it has been better for {self.config.recover_after:g}s"
            ]
        return body


def _level(burn: float, c: HealthConfig) -> str:
    return "fail" if burn >= c.fail_burn_rate else "warn" if burn >= c.warn_burn_rate else "pass"


def _kinds_level(kinds: set[str], origin: bool) -> str:
    return "fail" if origin or "persistent" in kinds else "warn" if "intermittent" in kinds else "pass"
