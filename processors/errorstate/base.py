"""The error state's interface (``ErrorState``, ``FloodState``) and its in-process
implementation, the embedded default (see the package's docstring)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from errorgate.processors.classification.episodes import EpisodeTracker, Observation
from errorgate.processors.classification.severity import BurnRates
from errorgate.processors.sampling.flood import FloodLimiter, FloodVerdict

# (service, fingerprint, telemetry time, deterministic class, a retry of it failed)
EpisodeInput = tuple[str, str, float, bool, bool]
# (service, telemetry second, requests, failed requests)
BurnInput = tuple[str, float, int, int]
# (fingerprint, telemetry time)
FloodInput = tuple[str, float]
# A trace decision: (keep, reason, adjusted count, tracestate threshold or None)
Verdict = tuple[bool, str, float, int | None]
# One trace of a ``sample`` batch: (trace id, its flood admission if it is an error trace, the
# upstream samplers' adjusted count, the decision this replica's own state gave)
DecisionInput = tuple[bytes, FloodInput | None, float, Verdict]


@dataclass
class SharedCall:
    """Another script call riding in the same round trip as ``ErrorState.classify``'s (the
    incident window): its ``reply`` is set when the shared state answered, else left None."""

    script: Any  # errorgate.extensions.shared_state.Script
    keys: Sequence[str]
    args: Sequence[Any]
    reply: Any = None


class ErrorState(Protocol):
    """``classify``'s state: episodes and burn-rate windows."""

    def classify(
        self,
        records: Sequence[BurnInput],
        observations: Sequence[EpisodeInput],
        services: Collection[str],
        also: Sequence[SharedCall] = (),
    ) -> tuple[list[Observation], BurnRates]:
        """Record a batch's requests, then observe its failing items in order: their episode
        observations, and the burn rates to assess ``services`` by (after the records). ``also``:
        calls made in the same round trip (only given where the state is shared)."""
        ...


class FloodState(Protocol):
    """``sample``'s state: flood budgets per fingerprint."""

    def admit(self, admits: Sequence[FloodInput]) -> list[FloodVerdict]:
        """The verdicts for a batch's error traces, in order."""
        ...


class LocalErrorState:
    def __init__(self, episodes: EpisodeTracker, burn: BurnRates) -> None:
        self.episodes = episodes
        self.burn = burn

    def classify(
        self,
        records: Sequence[BurnInput],
        observations: Sequence[EpisodeInput],
        services: Collection[str],
        also: Sequence[SharedCall] = (),
    ) -> tuple[list[Observation], BurnRates]:
        record, observe = self.burn.record, self.episodes.observe
        for service, second, requests, failed in records:
            record(service, second, requests, failed)
        seen = [
            observe(service, fp, ts, deterministic=deterministic, retry_failed=retry_failed)
            for service, fp, ts, deterministic, retry_failed in observations
        ]
        return seen, self.burn


class LocalFloodState:
    def __init__(self, flood: FloodLimiter) -> None:
        self.flood = flood

    def admit(self, admits: Sequence[FloodInput]) -> list[FloodVerdict]:
        admit = self.flood.admit
        return [admit(fp, at) for fp, at in admits]
