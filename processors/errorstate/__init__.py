"""The error state ``classify`` and ``sample`` keep across batches, behind one small interface.

What must be global when replicas split traffic by trace id: episode buckets and states per
(service, fingerprint), burn-rate windows per service (``classify``), flood budgets per
fingerprint (``sample``). Each processor hands its whole batch's updates over at once
(``ErrorState.classify``, ``FloodState.admit``), so a shared implementation makes one round
trip per batch, never one per item:

- ``LocalErrorState`` / ``LocalFloodState``: the in-process trackers (the embedded default);
- ``remote.RedisErrorState`` / ``remote.RedisFloodState``: the same updates applied by Lua
  scripts in Redis (the ``redis`` extension), falling back to the local trackers, which are
  kept up to date all along, whenever Redis does not answer in time;
- ``remote.RedisDecisions``: ``sample``'s trace decisions for late spans (and its flood budgets
  with them), so a late span of a kept trace is kept, with the same adjusted count, on any replica;
- ``remote.RedisIncidents``: ``classify``'s incident candidates (per-origin failing counts in the
  window) and which replica opens an incident.
"""

from __future__ import annotations

from errorgate.component import ComponentContext
from errorgate.extensions.shared_state import RedisStateExtension
from errorgate.processors.classification.incidents import IncidentTracker
from errorgate.processors.errorstate.base import (
    BurnInput,
    DecisionInput,
    EpisodeInput,
    ErrorState,
    FloodInput,
    FloodState,
    LocalErrorState,
    LocalFloodState,
    SharedCall,
    Verdict,
)
from errorgate.processors.errorstate.remote import (
    RedisDecisions,
    RedisErrorState,
    RedisFloodState,
    RedisIncidents,
)

__all__ = [
    "BurnInput",
    "DecisionInput",
    "EpisodeInput",
    "ErrorState",
    "FloodInput",
    "FloodState",
    "LocalErrorState",
    "LocalFloodState",
    "RedisDecisions",
    "RedisIncidents",
    "SharedCall",
    "Verdict",
    "error_state",
    "flood_state",
    "shared_decisions",
    "shared_incidents",
]


def error_state(context: ComponentContext, local: LocalErrorState) -> ErrorState:
    """Redis-backed when the ``redis`` extension is enabled, else ``local``."""
    shared = context.extension(RedisStateExtension)
    if shared is None:
        return local
    return RedisErrorState(shared, local, context.component_id)


def flood_state(context: ComponentContext, local: LocalFloodState) -> FloodState:
    shared = context.extension(RedisStateExtension)
    if shared is None:
        return local
    return RedisFloodState(shared, local, context.component_id)


def shared_decisions(context: ComponentContext, local: LocalFloodState) -> RedisDecisions | None:
    """``sample``'s shared trace decisions when the ``redis`` extension is enabled, else None."""
    shared = context.extension(RedisStateExtension)
    if shared is None:
        return None
    return RedisDecisions(shared, local, context.component_id, shared.config.decision_ttl)


def shared_incidents(context: ComponentContext, tracker: IncidentTracker) -> RedisIncidents | None:
    """``classify``'s incident window summed over replicas with the ``redis`` extension, else None."""
    shared = context.extension(RedisStateExtension)
    if shared is None:
        return None
    return RedisIncidents(shared, tracker, context.component_id)
