"""Deploy verdicts: a candidate version against its baseline of the same service.

Three checks over each version's last ``window`` of traffic (each version's own window, so a
post-deploy comparison with a replaced baseline reads the baseline's last minutes of traffic):

- failure ratio: one-sided Fisher exact test (``stats``); fails when the candidate fails more
  often at significance ``alpha`` and by more than ``max_failure_increase``; needs
  ``min_requests`` per version.
- new error groups: fingerprints the baseline never showed (in all its retained history)
  seen at least ``new_fingerprint_min_count`` times in the candidate's window.
- server-span latency: a one-sided Mann-Whitney U test over the per-slot p95s (Kayenta's
  test; ``stats``), failing at significance ``alpha`` when the candidate's median slot p95 is
  also above the baseline's by ``max_latency_increase`` and ``latency_min_difference``;
  inconclusive while a version has fewer than ``latency_min_slots`` slots with
  ``latency_slot_min_samples`` durations; not judged when a version has no durations at all.

``fail`` if any check fails, else ``inconclusive`` while a version lacks ``min_requests`` or
latency slots, else ``pass``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from errorgate.processors.deploys import stats
from errorgate.processors.deploys.settings import VerdictConfig
from errorgate.processors.deploys.store import VersionState, VersionStore, WindowStats

EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}


class VerdictInputError(ValueError):
    """Bad input: a missing or malformed parameter."""


class UnknownInputError(VerdictInputError):
    """A service or version errorgate has no state for."""


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "evidence": self.evidence}


def _version(store: VersionStore, service: str, role: str, version: str) -> VersionState:
    state = store.get(service, version)
    if state is None:
        known = store.versions(service)
        raise UnknownInputError(
            f"{role} version {version!r} of service {service!r} was never seen (or aged out); "
            f"versions seen: {', '.join(known) or 'none'}"
        )
    return state


def judge(
    store: VersionStore, config: VerdictConfig, service: str, candidate: str, baseline: str, window: float
) -> Verdict:
    if not store.versions(service):
        known = store.services()
        raise UnknownInputError(
            f"service {service!r} has no requests recorded; services seen: {', '.join(known[:20]) or 'none'}"
        )
    if candidate == baseline:
        raise VerdictInputError(f"candidate and baseline are the same version {candidate!r}")
    cand_state = _version(store, service, "candidate", candidate)
    base_state = _version(store, service, "baseline", baseline)
    cand, base = store.window(cand_state, window), store.window(base_state, window)
    enough = cand.requests >= config.min_requests and base.requests >= config.min_requests
    checks = {
        "failure_ratio": _failure_ratio(config, cand, base, enough),
        "new_fingerprints": _new_fingerprints(config, cand_state, base_state, cand),
        "latency": _latency(config, cand, base, enough),
    }
    results = [c["verdict"] for c in checks.values()]
    verdict = "fail" if "fail" in results else "inconclusive" if "inconclusive" in results else "pass"
    evidence: dict[str, Any] = {
        "service": service,
        "candidate": candidate,
        "baseline": baseline,
        "window_seconds": window,
        "min_requests": config.min_requests,
        "requests": {"candidate": cand.requests, "baseline": base.requests},
        "reasons": [c["reason"] for c in checks.values() if c["verdict"] != "pass"],
        **checks,
    }
    return Verdict(verdict, evidence)


def _counts(w: WindowStats) -> dict[str, Any]:
    return {"requests": w.requests, "failures": w.failures, "ratio": round(w.ratio, 6)}


def _failure_ratio(
    config: VerdictConfig, cand: WindowStats, base: WindowStats, enough: bool
) -> dict[str, Any]:
    p = stats.fisher_greater(cand.failures, cand.requests, base.failures, base.requests)
    increase = cand.ratio - base.ratio
    result = {
        "test": "fisher_exact_one_sided",
        "candidate": _counts(cand),
        "baseline": _counts(base),
        "increase": round(increase, 6),
        "p_value": p,
        "alpha": config.alpha,
        "max_increase": config.max_failure_increase,
    }
    if not enough:
        verdict, reason = "inconclusive", f"fewer than {config.min_requests} requests in a version's window"
    elif p < config.alpha and increase > config.max_failure_increase:
        verdict = "fail"
        reason = (
            f"failure ratio {cand.ratio:.2%} vs baseline {base.ratio:.2%} "
            f"(p={p:.3g} < {config.alpha}, increase {increase:.2%} > {config.max_failure_increase:.2%})"
        )
    else:
        verdict, reason = "pass", ""
    return {"verdict": verdict, "reason": reason, **result}


def _new_fingerprints(
    config: VerdictConfig, cand_state: VersionState, base_state: VersionState, cand: WindowStats
) -> dict[str, Any]:
    sightings = sorted(
        (
            (s.count, fp, s)
            for fp, s in cand_state.fingerprints.items()
            if fp not in base_state.fingerprints and s.last_seen >= cand.start
        ),
        key=lambda found: -found[0],
    )
    new = [
        {"fingerprint": fp, "count": n, "first_seen": s.first_seen, "kind": s.kind} for n, fp, s in sightings
    ]
    failing = [
        f
        for n, f in zip((n for n, _, _ in sightings), new, strict=True)
        if n >= config.new_fingerprint_min_count
    ]
    reason = (
        f"{len(failing)} error group(s) the baseline never showed, e.g. {failing[0]['fingerprint']} "
        f"x{failing[0]['count']}"
        if failing
        else ""
    )
    return {
        "verdict": "fail" if failing else "pass",
        "reason": reason,
        "min_count": config.new_fingerprint_min_count,
        "fingerprints": new[:20],
    }


def _slot_p95s(w: WindowStats, min_samples: int) -> list[float]:
    """The p95 of each slot with at least ``min_samples`` durations (a p95 of three is noise)."""
    found = []
    for sketch in w.slot_latency:
        if sum(sketch.values()) >= min_samples:
            p95 = stats.quantile(sketch, 0.95)
            if p95 is not None:
                found.append(p95)
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _latency(config: VerdictConfig, cand: WindowStats, base: WindowStats, enough: bool) -> dict[str, Any]:
    cand_p95s = _slot_p95s(cand, config.latency_slot_min_samples)
    base_p95s = _slot_p95s(base, config.latency_slot_min_samples)
    u, p = stats.mann_whitney_greater(cand_p95s, base_p95s)
    c_med, b_med = _median(cand_p95s), _median(base_p95s)
    sides: dict[str, dict[str, float | None]] = {}
    for side, w, med in (("candidate", cand, c_med), ("baseline", base, b_med)):
        sides[side] = {
            "p95_ms": _ms(stats.quantile(w.latency, 0.95)),
            "p99_ms": _ms(stats.quantile(w.latency, 0.99)),
            "median_slot_p95_ms": _ms(med),
        }
    result: dict[str, Any] = {
        "test": "mann_whitney_u_one_sided",
        "statistic": "slot_p95",
        "u": u,
        "p_value": p,
        "alpha": config.alpha,
        "slots": {"candidate": len(cand_p95s), "baseline": len(base_p95s), "min": config.latency_min_slots},
        "max_increase": config.max_latency_increase,
        "min_difference_ms": _ms(config.latency_min_difference),
        **sides,
    }
    few = min(len(cand_p95s), len(base_p95s)) < config.latency_min_slots
    if not cand.latency or not base.latency:
        # No server-span durations (requests counted from logs): latency has nothing to say.
        verdict, reason = "pass", ""
    elif not enough:
        verdict, reason = "inconclusive", f"fewer than {config.min_requests} requests in a version's window"
    elif few:
        verdict = "inconclusive"
        reason = (
            f"latency: fewer than {config.latency_min_slots} slots with "
            f"{config.latency_slot_min_samples}+ durations in a version's window"
        )
    elif (
        p < config.alpha
        and c_med is not None
        and b_med is not None
        and c_med > b_med * (1 + config.max_latency_increase)
        and c_med - b_med > config.latency_min_difference
    ):
        verdict = "fail"
        reason = (
            f"server-span latency: median slot p95 {c_med * 1000:.1f} ms vs {b_med * 1000:.1f} ms "
            f"(Mann-Whitney U over {len(cand_p95s)}+{len(base_p95s)} slots, p={p:.3g} < {config.alpha})"
        )
    else:
        verdict, reason = "pass", ""
    return {"verdict": verdict, "reason": reason, **result}


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
