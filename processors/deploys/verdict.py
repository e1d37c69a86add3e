"""Deploy verdicts: a candidate version against its baseline of the same service.

Three checks over each version's last ``window`` of traffic (each version's own window, so a
post-deploy comparison with a replaced baseline reads the baseline's last minutes of traffic):

- failure ratio: one-sided Fisher exact test (``stats``); fails when the candidate fails more
  often at significance ``alpha`` and by more than ``max_failure_increase``; needs
  ``min_requests`` per version.
- new error groups: fingerprints the baseline never showed (in all its retained history)
  seen at least ``new_fingerprint_min_count`` times in the candidate's window.
- server-span latency: candidate p95 or p99 over the baseline's by ``max_latency_increase``
  and by ``latency_min_difference`` (a thresholded comparison, not a test; sketches are
  within 1 %).

``fail`` if any check fails, else ``inconclusive`` while a version lacks ``min_requests``,
else ``pass``.
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
    verdict = "fail" if "fail" in results else "inconclusive" if not enough else "pass"
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


def _latency(config: VerdictConfig, cand: WindowStats, base: WindowStats, enough: bool) -> dict[str, Any]:
    quantiles: dict[str, dict[str, float | None]] = {"candidate": {}, "baseline": {}}
    worse: list[str] = []
    for name, q in (("p95", 0.95), ("p99", 0.99)):
        c, b = stats.quantile(cand.latency, q), stats.quantile(base.latency, q)
        quantiles["candidate"][f"{name}_ms"] = None if c is None else round(c * 1000, 3)
        quantiles["baseline"][f"{name}_ms"] = None if b is None else round(b * 1000, 3)
        if (
            c is not None
            and b is not None
            and c > b * (1 + config.max_latency_increase)
            and c - b > config.latency_min_difference
        ):
            worse.append(f"{name} {c * 1000:.1f} ms vs {b * 1000:.1f} ms")
    if not enough:
        verdict, reason = "inconclusive", f"fewer than {config.min_requests} requests in a version's window"
    elif worse:
        verdict, reason = "fail", "server-span latency " + ", ".join(worse)
    else:
        verdict, reason = "pass", ""
    return {"verdict": verdict, "reason": reason, "max_increase": config.max_latency_increase, **quantiles}
