"""The error state ``classify`` and ``sample`` keep across batches, behind one small interface.

What must be global when replicas split traffic by trace id: episode buckets and states per
(service, fingerprint), burn-rate windows per service (``classify``), flood budgets per
fingerprint (``sample``). Each processor hands its whole batch's updates over at once
(``ErrorState.classify``, ``FloodState.admit``), so a shared implementation makes one round
trip per batch, never one per item:

- ``LocalErrorState`` / ``LocalFloodState``: the in-process trackers (the embedded default);
- ``remote.RedisErrorState`` / ``remote.RedisFloodState``: the same updates applied by Lua
  scripts in Redis (the ``redis`` extension), falling back to the local trackers, which are
  kept up to date all along, whenever Redis does not answer in time.
"""

from __future__ import annotations

from errorgate.component import ComponentContext
from errorgate.extensions.shared_state import RedisStateExtension
from errorgate.processors.errorstate.base import (
    BurnInput,
    EpisodeInput,
    ErrorState,
    FloodInput,
    FloodState,
    LocalErrorState,
    LocalFloodState,
)
from errorgate.processors.errorstate.remote import RedisErrorState, RedisFloodState

__all__ = [
    "BurnInput",
    "EpisodeInput",
    "ErrorState",
    "FloodInput",
    "FloodState",
    "LocalErrorState",
    "LocalFloodState",
    "error_state",
    "flood_state",
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
